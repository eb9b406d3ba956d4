"""The package's version: the one place it is written (hatch reads it for the wheel's metadata)."""

__version__ = "0.1.0"
