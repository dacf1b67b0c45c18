"""The package version, in one place (core layer: importable from anywhere without cost)."""

__version__ = "0.1.0"
