"""Training: prompt sampling, targets, losses and the PLM (+ PMM) training loop on cached embeddings."""
