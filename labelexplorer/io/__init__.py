"""Survey readers (APOGEE, LAMOST, SDSS images), format detection and the data manifest."""

from .registry import detect_format, read, readers, register_reader

__all__ = ["read", "readers", "register_reader", "detect_format"]
