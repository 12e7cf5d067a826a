"""Storage: the HDF5 files and their schema, provenance."""
