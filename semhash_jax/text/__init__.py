"""Text encoders that map class names to embeddings, used to build class prototypes."""
