"""Exceptions that tell users what to change."""


class TraceError(ValueError):
    """The model cannot be recorded at the requested granularity."""


class UnsupportedLayerError(ValueError):
    """A layer whose operation has no neuron-edge rule."""
