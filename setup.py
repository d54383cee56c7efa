"""Install semhash_jax. Pinned dependencies live in requirements.txt."""

import setuptools

setuptools.setup(
    name="semhash_jax",
    version="0.1.0",
    description="SemanticHash: semantics-guided deep hashing for image retrieval, in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["semhash_jax", "semhash_jax.*"]),
    package_data={"semhash_jax.datasets": ["data/*.txt"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12.8",
        "optax",
        "orbax-checkpoint",
        "ml-collections",
        "clu",
        "tensorflow-cpu",
        "tensorboard",
        "tensorflow-datasets",
        "array-record",
        "grain",
        "numpy",
        "safetensors",
        "tokenizers",
        "transformers",
        "importlib-resources",
    ],
)
