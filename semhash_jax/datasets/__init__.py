"""TFDS builders, dataset lookup and retrieval protocols."""
