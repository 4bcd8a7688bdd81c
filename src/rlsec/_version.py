"""The release, in one place (layer 0: imports nothing of rlsec)."""

__version__ = "0.1.0"
