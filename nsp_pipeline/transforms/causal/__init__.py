"""The causal transform: sparse closure, factorised operator and its builder, precision, exact mode."""
