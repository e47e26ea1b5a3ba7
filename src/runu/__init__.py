"""runu: the runc-compatible OCI runtime command line that boots unikernels."""

__version__ = "0.1.0"
