"""Transforms of activation patterns: the causal (Möbius) and the Laplacian transform."""
