"""nsp-pipeline: signal processing on neural networks at scale."""

__version__ = "0.1.0"
