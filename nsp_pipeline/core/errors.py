"""Exceptions that tell users what to change."""

from collections.abc import Sequence


def shortened(values: Sequence, limit: int = 10) -> str:
    """A list for a message: all of ``values``, or the first ``limit`` and how many there are."""
    values = list(values)
    if len(values) <= limit:
        return str(values)
    return f"{str(values[:limit])[:-1]}, ... ({len(values)} in all)]"


class TraceError(ValueError):
    """The model cannot be recorded at the requested granularity."""


class UnsupportedLayerError(ValueError):
    """A layer whose operation has no neuron-edge rule."""


class NonFiniteError(ValueError):
    """NaN or Inf values where finite ones are needed (activations to transform)."""


class ProvenanceError(ValueError):
    """Files computed from different models, data, settings or samples are combined."""


class NotFactorizableError(ValueError):
    """An operation whose ancestor relation is not a union of per-axis products."""
