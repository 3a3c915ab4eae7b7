"""Reader for SDSS colour cutouts: a folder of ``<objID>.jpg``/``.png`` files plus a catalog.

The layout is the one of the public galaxy-metallicity data (``sdss_gri_128/train/`` with
``train.csv`` beside it holding ``objID`` and ``oh_p50``). SDSS objIDs have 19 digits,
more than a float64 holds exactly, so they are read and kept as strings throughout.

Three kinds of source are recognised: a folder holding images, a single image file, and
a CSV catalog whose rows name images (a column ``file``/``filename``/``image``/``path``,
or objIDs with the images in a folder named like the CSV's stem beside it).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..exceptions import FileFormatError, ShapeError
from ..images import ImageSet
from .registry import register_reader

__all__ = ["read_sdss_images", "is_image_source", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_ID_COLUMNS = ("objid", "obj_id", "id")
_FILE_COLUMNS = ("file", "filename", "image", "path")
_FLOAT_TEXT = re.compile(r"^[+-]?\d+\.\d*([eE][+-]?\d+)?$|^[+-]?\d+(\.\d*)?[eE][+-]?\d+$")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _csv_columns(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [c.strip().strip('"').lower() for c in handle.readline().split(",")]
    except OSError:
        return []


def is_image_source(path) -> bool:
    """True for an image file, a folder holding images, or a CSV that names images.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> is_image_source(folder)
    False
    >>> _ = (folder / "1237648704043942146.jpg").write_bytes(b"")
    >>> is_image_source(folder), is_image_source(folder / "1237648704043942146.jpg")
    (True, True)
    """
    path = Path(path)
    if path.is_dir():
        return any(_is_image(p) for p in path.iterdir())
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return path.is_file()
    if path.suffix.lower() == ".csv" and path.is_file():
        sibling = path.with_suffix("")
        return (sibling.is_dir() and any(_is_image(p) for p in sibling.iterdir())) or any(
            c in _FILE_COLUMNS for c in _csv_columns(path))
    return False


# ---------------------------------------------------------------------------- catalog
def _default_catalog(folder: Path) -> Path | None:
    """``train.csv`` beside folder ``train/`` (or inside it; or ``catalog.csv`` inside it)."""
    for candidate in (folder.parent / f"{folder.name}.csv", folder / f"{folder.name}.csv", folder / "catalog.csv"):
        if candidate.is_file():
            return candidate
    return None


def _id_column(columns, source: str) -> str:
    lookup = {str(c).strip().lower(): c for c in columns}
    for key in _ID_COLUMNS:
        if key in lookup:
            return lookup[key]
    raise FileFormatError(f"{source}: catalog has no objID column (columns: {', '.join(map(str, columns))}); "
                          "expected a column 'objID' holding the image file stems")


def _csv(path, source: str, **options):
    import pandas as pd

    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
        raise FileFormatError(f"{source}: unreadable catalog ({exc}); expected a CSV with an objID column") from exc


def _read_catalog(catalog, source: str):
    """The catalog as a DataFrame with its id column as exact strings, and that column's name."""
    import pandas as pd

    if isinstance(catalog, pd.DataFrame):
        table = catalog.copy()
        column = _id_column(table.columns, source)
    else:
        column = _id_column(_csv(catalog, source, nrows=0).columns, source)
        table = _csv(catalog, source, dtype={column: str})
    if table[column].isna().any():
        raise FileFormatError(f"{source}: row {int(np.flatnonzero(table[column].isna())[0])} has no objID; "
                              "expected one objID per row")
    table[column] = table[column].astype(str).str.strip()
    floats = table[column][table[column].str.match(_FLOAT_TEXT)]
    if len(floats):
        raise FileFormatError(f"{source}: objID {floats.iloc[0]!r} was written as a floating-point number, which "
                              "loses digits of 19-digit SDSS objIDs; expected integer objIDs")
    duplicated = table[column][table[column].duplicated()]
    if len(duplicated):
        raise FileFormatError(f"{source}: objID {duplicated.iloc[0]!r} appears more than once; "
                              "expected one row per image")
    return table, column


def _join(files: dict[str, Path], table, column: str, source: str):
    """Inner join of image files (by stem) and catalog rows, in catalog order; warns about the rest."""
    in_catalog = table[column].isin(list(files))
    orphans = len(files) - int(in_catalog.sum())
    if orphans or not in_catalog.all():
        warnings.warn(f"{source}: {int((~in_catalog).sum())} catalog rows have no image and {orphans} images "
                      f"have no catalog row; keeping the {int(in_catalog.sum())} that have both", stacklevel=3)
    if not in_catalog.any():
        raise FileFormatError(f"{source}: no image file stem matches an objID of the catalog; expected files "
                              "named <objID>.jpg")
    table = table[in_catalog].reset_index(drop=True)
    return [files[i] for i in table[column]], table


# ---------------------------------------------------------------------------- pixels
def _load_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            converted = image.mode != "RGB"
            return (image.convert("RGB") if converted else image.copy()), converted
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise FileFormatError(f"{path}: corrupt or unreadable image ({exc}); expected a JPEG or PNG file") from exc


def _rebin(image, size: int | None) -> np.ndarray:
    """(3, H, W) float32 in [0, 1], area-averaged down to (size, size) when *size* is given."""
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float32) / 255.0
    height, width = pixels.shape[:2]
    if size is not None and (height, width) != (size, size):
        if height % size == 0 and width % size == 0:
            pixels = pixels.reshape(size, height // size, size, width // size, 3).mean(axis=(1, 3), dtype=np.float64)
        else:  # not an integer factor: PIL's box filter is the area average over fractional pixels
            pixels = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return pixels.transpose(2, 0, 1)


def _load_images(paths: list[Path], size: int | None) -> tuple[np.ndarray, int]:
    images, converted = None, 0
    for index, path in enumerate(paths):
        image, was_converted = _load_rgb(path)
        converted += was_converted
        pixels = _rebin(image, size)
        if images is None:  # filled in place: stacking a list would hold every image twice
            images = np.empty((len(paths),) + pixels.shape, dtype=np.float32)
        elif pixels.shape != images.shape[1:]:
            raise ShapeError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[2]} px but the first one is "
                             f"{images.shape[2]}x{images.shape[3]}; expected equal sizes (pass size=... to rebin "
                             "them all)")
        images[index] = pixels
    return images, converted


# ---------------------------------------------------------------------------- sources
def _sources(path: Path, name: str):
    """(image files by stem, folder to look for a default catalog, catalog named by the source or None)."""
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise FileFormatError(f"{name}: folder holds no .jpg/.jpeg/.png images; expected <objID>.jpg cutouts")
        return {p.stem: p for p in files}, path, None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise FileFormatError(f"{name}: no such image file")
        return {path.stem: path}, path.parent, None
    if path.suffix.lower() == ".csv" and path.is_file():
        return _files_named_by_csv(path, name), None, path
    raise FileFormatError(f"{name}: expected a folder of .jpg/.png images, an image file or a CSV naming images")


def _files_named_by_csv(path: Path, name: str) -> dict[str, Path]:
    columns = {str(c).strip().lower(): c for c in _csv(path, name, nrows=0).columns}
    file_column = next((columns[c] for c in _FILE_COLUMNS if c in columns), None)
    if file_column is None:
        folder = path.with_suffix("")
        files = _image_files(folder) if folder.is_dir() else []
        if not files:
            raise FileFormatError(f"{name}: the CSV has no file column ({', '.join(_FILE_COLUMNS)}) and no image "
                                  f"folder {folder.name}/ lies beside it; expected one of them")
        return {p.stem: p for p in files}
    table, column = _read_catalog(path, name)
    files = {}
    for objid, relative in zip(table[column], table[file_column].astype(str)):
        image = (path.parent / relative.strip())
        if not _is_image(image):
            raise FileFormatError(f"{name}: row {objid!r} names {relative!r}, which is not an image file; expected "
                                  f"a path to a .jpg/.png relative to {path.parent}")
        files[objid] = image
    return files


@register_reader("sdss-images", kind="images", opens="path", detect=is_image_source,
                 description="SDSS colour cutouts: a folder of <objID>.jpg/.png plus a catalog CSV")
def read_sdss_images(path, name: str | None = None, *, catalog=None, size: int | None = None) -> ImageSet:
    """Read colour cutouts into an :class:`~labelexplorer.images.ImageSet` joined to their catalog.

    Parameters
    ----------
    path : str or Path
        A folder of ``<objID>.jpg``/``.png`` images, one image file, or a CSV naming images.
    name : str, optional
        Name for messages (defaults to *path*).
    catalog : str, Path, pandas.DataFrame or False, optional
        Catalog with an ``objID`` column (read as exact strings). Default: ``<folder>.csv``
        beside the folder (``train.csv`` for ``train/``), ``<folder>/<folder>.csv`` or
        ``<folder>/catalog.csv``; a CSV *path* is its own catalog. ``False``: none.
    size : int, optional
        Rebin every image to ``size x size``: an area average when *size* divides the
        image size (128 -> 64 -> 32 ...), else PIL's box filter.

    Returns
    -------
    ImageSet
        ``(n, 3, H, W)`` float32 in [0, 1], ids = objID strings, catalog rows in catalog
        order (images without a catalog row, and rows without an image, are left out
        with a warning). Grayscale/RGBA/palette images are converted to RGB
        (``meta["converted_to_rgb"]`` counts them).

    Raises
    ------
    FileFormatError
        A corrupt image (naming the file), an empty folder, a catalog without objID column,
        objIDs stored as floats, or no image matching the catalog.
    ShapeError
        Images of different sizes without *size*.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp()) / "train"
    >>> folder.mkdir()
    >>> Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "1237648704043942146.png")
    >>> _ = (folder.parent / "train.csv").write_text("objID,oh_p50\\n1237648704043942146,8.9\\n")
    >>> images = read_sdss_images(folder, size=4)
    >>> images.shape, images.ids.tolist(), images.catalog["oh_p50"].tolist()
    ((1, 3, 4, 4), ['1237648704043942146'], [8.9])
    >>> images.images[0, :, 0, 0].tolist()
    [1.0, 0.0, 0.0]
    """
    path = Path(path)
    name = name or str(path)
    if size is not None and (int(size) != size or size < 1):
        raise ShapeError(f"size: expected a positive integer number of pixels, got {size!r}")
    files, folder, own_catalog = _sources(path, name)
    if catalog is None:
        catalog = own_catalog or (_default_catalog(folder) if folder is not None else None)
    catalog_name = None
    if catalog is not False and catalog is not None:
        catalog_name = "<DataFrame>" if not isinstance(catalog, (str, Path)) else str(catalog)
        table, column = _read_catalog(catalog, catalog_name)
        paths, table = _join(files, table, column, catalog_name)
        ids = table[column].tolist()
    else:
        import pandas as pd

        ids = list(files)
        paths = [files[i] for i in ids]
        table = pd.DataFrame({"objID": ids})
    images, converted = _load_images(paths, None if size is None else int(size))
    if converted:
        warnings.warn(f"{name}: {converted} images were not RGB (grayscale, RGBA or palette) and were converted to RGB",
                      stacklevel=2)
    meta = dict(survey="SDSS", bands="gri", source=name, catalog=catalog_name, size=images.shape[-1],
                converted_to_rgb=converted, scale="8-bit values / 255")
    return ImageSet(images, ids=ids, catalog=table, meta=meta)
