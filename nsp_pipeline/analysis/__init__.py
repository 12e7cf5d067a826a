"""Analyses built on the transforms: one-call analysis and dataset statistics."""
