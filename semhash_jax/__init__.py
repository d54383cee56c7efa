"""SemanticHash in JAX: semantics-guided deep hashing for image retrieval."""
