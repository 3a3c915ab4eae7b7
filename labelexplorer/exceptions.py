"""One exception hierarchy for everything labelexplorer raises on purpose.

Every error a user can provoke with bad input is a :class:`LabelExplorerError`
whose message names the file or argument at fault and what was expected, so that
nobody has to read a traceback from deep inside numpy, astropy or torch.
"""

from __future__ import annotations

__all__ = [
    "LabelExplorerError",
    "FileFormatError",
    "ShapeError",
    "SpectrumError",
    "LabelError",
    "NotTrainedError",
    "ModelFileError",
    "DownloadError",
    "UnknownNameError",
]


class LabelExplorerError(Exception):
    """Base class of every error labelexplorer raises about its input.

    Examples
    --------
    >>> try:
    ...     raise FileFormatError("spec.fits: not a FITS file (expected SIMPLE card)")
    ... except LabelExplorerError as err:
    ...     print(err)
    spec.fits: not a FITS file (expected SIMPLE card)
    """


class FileFormatError(LabelExplorerError, ValueError):
    """A file is unreadable, truncated, or not laid out the way its format requires."""


class ShapeError(LabelExplorerError, ValueError):
    """An array has the wrong shape or pixel count."""


class SpectrumError(LabelExplorerError, ValueError):
    """Spectral content is unusable (all-NaN flux, negative errors, ...)."""


class LabelError(LabelExplorerError, KeyError):
    """A label name is unknown or a label table is unusable."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class NotTrainedError(LabelExplorerError, RuntimeError):
    """A model was asked to predict or save before it was fitted."""


class ModelFileError(LabelExplorerError, ValueError):
    """A saved model directory or weights file is missing, corrupt or incompatible."""


class DownloadError(LabelExplorerError, OSError):
    """A dataset could not be downloaded or failed its checksum."""


class UnknownNameError(LabelExplorerError, KeyError):
    """A registry lookup (model, reader, dataset) failed; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, choices) -> str:
    """Return a `` (did you mean 'x'?)`` hint for *name* among *choices*, or ``''``.

    Examples
    --------
    >>> did_you_mean("bcnn-censord", ["bcnn", "bcnn-censored", "slam"])
    " (did you mean 'bcnn-censored'?)"
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
