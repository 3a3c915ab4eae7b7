"""Reader registry and format detection behind :func:`labelexplorer.read`.

Each survey format registers a reader with a detection function. FITS readers
receive an opened ``HDUList`` (so every reader accepts a path, a file object or an
HDUList without repeating that logic) and detect their format from the headers; path
readers (JPEG/PNG folders, CSV catalogs) detect from the path. Errors raised while
opening or reading become :class:`~labelexplorer.exceptions.FileFormatError` naming
the file and what was expected.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..exceptions import FileFormatError, LabelExplorerError, UnknownNameError, did_you_mean

__all__ = ["register_reader", "read", "readers", "open_fits", "hdu_data", "source_name", "detect_format"]


@dataclass(frozen=True)
class Reader:
    """One registered format."""

    name: str
    kind: str  # "spectra", "images" or "labels"
    opens: str  # "fits": reader(hdul, name, **kw); "path": reader(path, name, **kw)
    detect: Callable[[Any], bool]
    read: Callable[..., Any]
    description: str = ""


_READERS: dict[str, Reader] = {}


def register_reader(name: str, *, kind: str, detect: Callable, opens: str = "fits", description: str = ""):
    """Decorator registering a reader function under *name*.

    Examples
    --------
    >>> @register_reader("demo-format", kind="labels", opens="path",
    ...                  detect=lambda path: str(path).endswith(".demo"))
    ... def read_demo(path, name):
    ...     return {"path": name}
    >>> "demo-format" in readers()
    True
    >>> _ = _READERS.pop("demo-format")
    """

    def decorate(function):
        _READERS[name] = Reader(name, kind, opens, detect, function, description or (function.__doc__ or "").split("\n")[0])
        return function

    return decorate


def readers() -> dict[str, Reader]:
    """The registered readers by name (importing the built-in ones first)."""
    _load_builtin_readers()
    return dict(_READERS)


def _load_builtin_readers() -> None:
    from . import apogee, images, lamost  # noqa: F401  (each registers its formats)


def source_name(source) -> str:
    """A human-readable name for a path, file object or HDUList, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    filename = getattr(source, "filename", None)
    if callable(filename) and filename():
        return str(filename())
    return f"<{type(source).__name__}>"


_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"


def _looks_like_fits(head: bytes) -> bool:
    return head.startswith(_FITS_MAGIC)


@contextlib.contextmanager
def open_fits(source):
    """Open *source* (path, file object or HDUList) as an HDUList, with readable errors.

    Yields ``(hdul, name)``. Paths are checked for existence and for the FITS signature
    (gzip-compressed FITS is accepted) before astropy sees them.

    Examples
    --------
    >>> from astropy.io import fits
    >>> with open_fits(fits.HDUList([fits.PrimaryHDU()])) as (hdul, name):
    ...     len(hdul), name
    (1, '<HDUList>')
    """
    from astropy.io import fits

    name = source_name(source)
    if isinstance(source, fits.HDUList):
        yield source, name
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileFormatError(f"{name}: no such file")
        with open(path, "rb") as handle:
            head = handle.read(len(_FITS_MAGIC))
        if head.startswith(_GZIP_MAGIC):
            try:
                with gzip.open(path, "rb") as handle:
                    head = handle.read(len(_FITS_MAGIC))
            except (OSError, EOFError) as exc:
                raise FileFormatError(f"{name}: corrupt gzip file ({exc}); expected gzip-compressed FITS") from exc
        if not _looks_like_fits(head):
            raise FileFormatError(f"{name}: not a FITS file (expected the 'SIMPLE  =' card at the start)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(source, memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise FileFormatError(f"{name}: unreadable or truncated FITS file ({exc})") from exc
    try:
        yield hdul, name
    finally:
        hdul.close()


def hdu_data(hdul, index, name: str, *, what: str = "data") -> np.ndarray:
    """The data of HDU *index* as an array, or a FileFormatError naming file, HDU and the problem.

    Truncated files fail here (astropy reads the data lazily), so readers call this
    instead of touching ``hdul[i].data`` directly.
    """
    try:
        hdu = hdul[index]
    except (IndexError, KeyError) as exc:
        raise FileFormatError(f"{name}: HDU {index} is missing (expected {what}; the file has {len(hdul)} HDUs)") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = hdu.data
            if data is not None and not hasattr(data, "columns"):
                data = np.array(data)
    except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
        raise FileFormatError(f"{name}: HDU {index} ({what}) is truncated or corrupt ({exc})") from exc
    if data is None:
        raise FileFormatError(f"{name}: HDU {index} holds no data (expected {what})")
    return data


def detect_format(source) -> str:
    """Name of the registered format that recognises *source*.

    Raises
    ------
    FileFormatError
        If no reader recognises it; the message lists the known formats.
    """
    path_like = isinstance(source, (str, os.PathLike))
    if path_like:
        path_reader = _path_reader(Path(source))
        if path_reader is not None:
            return path_reader.name
    with open_fits(source) as (hdul, name):
        return _fits_reader(hdul, name, source).name


def _path_reader(path: Path) -> Reader | None:
    for reader in readers().values():
        if reader.opens == "path" and reader.detect(path):
            return reader
    return None


def _fits_reader(hdul, name: str, source) -> Reader:
    """The FITS reader that recognises an opened *hdul*, or a FileFormatError."""
    registered = readers()
    for reader in registered.values():
        if reader.opens == "fits":
            try:
                if reader.detect(hdul):
                    return reader
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                continue
    hint = ""
    if isinstance(source, (str, os.PathLike)) and not str(source).endswith(".gz") \
            and Path(source).stat().st_size % 2880:
        hint = " The file size is not a multiple of 2880 bytes: it is probably truncated."
    raise FileFormatError(f"{name}: FITS layout not recognised; known formats: {', '.join(sorted(registered))}. "
                          f"Pass format=... to force one.{hint}")


def read(source, format: str | None = None, **options):
    """Read survey files into a Spectra, an ImageSet or a label table.

    Parameters
    ----------
    source : path, file object, HDUList, or a list of paths
        A list (or a folder, for spectrum formats) is read file by file and the spectra
        are concatenated.
    format : str, optional
        A registered format name (``labelexplorer.io.readers()``); detected when omitted.
    **options
        Passed to the reader (e.g. ``rows="visits"`` for apStar files).

    Examples
    --------
    >>> import labelexplorer as le
    >>> sorted(le.io.readers())[:3]
    ['allstar', 'apstar', 'apvisit']
    """
    registered = readers()
    if isinstance(source, (list, tuple)) and not _is_hdulist(source):  # an HDUList is a list of HDUs
        if not source:
            raise LabelExplorerError("read: expected at least one file")
        parts = [read(item, format=format, **options) for item in source]
        return _combine(parts)
    if format is not None and format not in registered:
        raise UnknownNameError(f"{source_name(source)}: unknown format {format!r}; "
                               f"known: {', '.join(sorted(registered))}"
                               f"{did_you_mean(format, registered)}")
    path_like = isinstance(source, (str, os.PathLike))
    if path_like and format is None:
        path_reader = _path_reader(Path(source))
        if path_reader is not None:
            return path_reader.read(Path(source), str(source), **options)
    if path_like and Path(source).is_dir() and format is None:
        files = sorted(p for p in Path(source).iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FileFormatError(f"{source}: empty folder")
        return read(files, **options)
    reader = registered[format] if format else None
    if reader is not None and reader.opens == "path":
        if not path_like:
            raise FileFormatError(f"{source_name(source)}: the {reader.name} reader needs a path")
        return reader.read(Path(source), str(source), **options)
    with open_fits(source) as (hdul, name):  # opened once: detection and reading share the HDUList
        reader = reader or _fits_reader(hdul, name, source)
        return reader.read(hdul, name, **options)


def _is_hdulist(source) -> bool:
    from astropy.io import fits

    return isinstance(source, fits.HDUList)


def _combine(parts):
    from ..spectra import Spectra

    if all(isinstance(p, Spectra) for p in parts):
        return Spectra.concatenate(parts)
    if len(parts) == 1:
        return parts[0]
    raise LabelExplorerError("read: a list of files must all hold spectra to be combined; read them one by one")
