"""bitswarm: a permissionless network for machine learning whose work anyone can check."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bitswarm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
