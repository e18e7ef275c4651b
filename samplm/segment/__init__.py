"""Click-free segmentation: prompts from the image itself (the task's prototype and location prior),
decoded through an adapter (``generator.py``: :class:`AdapterMaskGenerator`), as a resumable job over
folders of images (``jobs.py``: ``samplm segment``)."""
