"""The :class:`ImageSet` container: a batch of colour cutouts joined to a catalog.

Images are ``(n, 3, H, W)`` float32 in [0, 1] (channels first, the order torch uses);
``catalog`` is a pandas DataFrame with one row per image, in the same order, whose
``ids`` column is the survey object ID (SDSS ``objID``) as a string.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .exceptions import LabelError, ShapeError

__all__ = ["ImageSet"]


class ImageSet:
    """Colour images with ids, a per-image catalog and metadata.

    Parameters
    ----------
    images : array_like, shape (n, 3, H, W)
        Pixel values scaled to [0, 1].
    ids : sequence of str
        One identifier per image.
    catalog : pandas.DataFrame, optional
        One row per image (same order): photometry, labels, ...
    meta : dict, optional
        Batch-wide metadata (survey, band mapping, source folder).

    Examples
    --------
    >>> import numpy as np
    >>> imgs = ImageSet(np.zeros((2, 3, 8, 8)), ids=["1", "2"])
    >>> imgs.shape, imgs["2"].ids.tolist()
    ((2, 3, 8, 8), ['2'])
    """

    def __init__(self, images, ids=None, catalog=None, meta: Mapping[str, Any] | None = None):
        import pandas as pd

        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ShapeError(f"images: expected shape (n, 3, H, W), got {images.shape}")
        n = images.shape[0]
        self.images = images
        self.ids = np.array([str(i) for i in (range(n) if ids is None else ids)])
        if self.ids.shape != (n,):
            raise ShapeError(f"ids: expected {n} identifiers, got {self.ids.shape[0]}")
        catalog = pd.DataFrame(index=range(n)) if catalog is None else catalog.reset_index(drop=True)
        if len(catalog) != n:
            raise ShapeError(f"catalog: expected {n} rows (one per image), got {len(catalog)}")
        self.catalog = catalog
        self.meta = dict(meta or {})

    @property
    def shape(self) -> tuple:
        """``(n, 3, H, W)``."""
        return self.images.shape

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return f"<ImageSet {len(self)} images {self.shape[2]}x{self.shape[3]}, catalog columns {list(self.catalog.columns)}>"

    def __getitem__(self, key) -> "ImageSet":
        if isinstance(key, str):
            key = [key]
        key = np.asarray(key) if not isinstance(key, slice) else np.arange(len(self))[key]
        if key.dtype.kind in "US":
            lookup = {sid: i for i, sid in enumerate(self.ids)}
            missing = [k for k in key if k not in lookup]
            if missing:
                raise LabelError(f"unknown image id {missing[0]!r}")
            key = np.array([lookup[k] for k in key], dtype=int)
        elif key.dtype == bool:
            key = np.flatnonzero(key)
        return ImageSet(self.images[key], self.ids[key], self.catalog.iloc[key], self.meta)
