"""Models: the operation registry, tracing, built-in architectures, artifacts and training."""
