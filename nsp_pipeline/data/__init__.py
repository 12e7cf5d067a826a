"""Datasets: specs, sample selection and loading of the requested samples."""
