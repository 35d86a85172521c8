"""rankexp's data plane: ground-truth world, two-tower model, ranking service, router."""

__version__ = "0.1.0"
