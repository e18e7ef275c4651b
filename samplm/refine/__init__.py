"""Masks -> PMM refinement: polygons fitted to the decoder's image features (optional, at inference)."""
