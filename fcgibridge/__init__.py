"""fcgibridge: a FastCGI server, client and protocol core for Python."""

__version__ = "0.1.0"

from .accept import AcceptApp

__all__ = ["AcceptApp", "__version__"]
