"""rlsec: reinforcement-learning security."""

__version__ = "0.1.0"
