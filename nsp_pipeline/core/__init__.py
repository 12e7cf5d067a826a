"""Torch-free foundations: layers and node order, patterns, errors, atomic writes."""
