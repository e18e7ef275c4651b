"""Encoder -> cache: each image is encoded once by SAM's image encoder and its embedding stored
(float16 safetensors with a checksum), so training, evaluation and prediction never re-encode it."""

from .embeddings import EmbeddingCache

__all__ = ["EmbeddingCache"]
