"""rankexp: the control plane (Kopf operator) of online A/B experiments for ranking models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rankexp")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
