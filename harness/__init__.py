"""PCM chip test harness: program, drift, read back and evaluate analog PCM compute-in-memory chips."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pcm-harness")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
