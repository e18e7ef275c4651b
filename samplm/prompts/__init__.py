"""Prompts for SAM's prompt encoder: how they are checked (``validation.py``), the centre click
(``center_click.py``), the clicks sampled for training (``sampling.py``) and the clicks found without a
user (``location_prior.py``: similarity to the task's prototype)."""
