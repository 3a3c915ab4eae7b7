"""Catalogs at survey scale: batch inference into Parquet/FITS, resumable, on one machine or a Dask cluster.

:func:`predict_catalog` turns survey files into a catalog of labels with their three
uncertainties and per-star flags::

    inputs ──expand──> file list ──batches of N files──> read ─> model.prepare ─> model.predict
                                                                   │
             <output stem>.parts/part-000000.parquet  <── one atomic part file per batch
             <output stem>.parts/ledger.json          <── which batches are done (and their errors)
                                                                   │ when every batch is done
             <output>.parquet (+ --fits)  <── streamed from the parts, written atomically
             <output stem>.errors.csv     <── files that could not be used, with the reason

Reliability. Files are read batch by batch (never the whole survey at once). Every part
file and the ledger are written to a temporary name and renamed, so a killed run leaves
only complete parts; running again with the same model, inputs and batch size continues
with the batches not yet in the ledger (a part without a ledger entry is simply redone).
A bad input file (truncated, not FITS, no usable pixel...) is reported by name and
skipped (``on_error="skip"``) or stops the run (``"fail"``); either way the batches
already written are kept and a later run resumes from them. Batches recorded with
skipped files are not retried on resume; start over (``resume=False``) after fixing files.

Determinism. The data columns depend only on the model, the files and the batch size,
never on the date, the machine's scheduler or how batches are spread over workers:
provenance that changes from run to run (date, host, scheduler) lives in the metadata.
Batch *k* is always the same files, and a model with a ``random_state``
hyperparameter (MC-dropout BCNN) gets, for each batch, a seed derived from its
``random_state`` and the batch's first file name, so a Dask run reproduces the
single-process run: bit for bit for deterministic models (ridge, SLAM) and, for MC
models, bit for bit too when the model's own chunking is fixed (``mc_batch_size``),
statistically otherwise (different batch sizes give other dropout masks).

Scale-out. ``scheduler="local"`` starts a :class:`distributed.LocalCluster` (N worker
processes, one thread each, bounded memory, no dashboard, on 127.0.0.1); an address
connects to a running scheduler. Work is partitioned by batches of files; each worker
loads the model once from its directory (an in-memory model is saved to a temporary
directory first; remote workers must see that directory and the input files) and
returns the batch's table, which this process writes.

:class:`Catalog` is the notebook (and dashboard) view of a catalog on disk: lazy over
Parquet row groups through pyarrow or a dask dataframe, with ``filter``, ``join`` to a
label table, ``crossmatch`` and ``compare`` (two methods on the same stars).

The ``labelexplorer predict`` and ``labelexplorer train`` commands live here too
(:func:`configure_parser` and :func:`run` serve both; the sub-command is told by the
parser's name).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import itertools
import json
import os
import platform
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from . import __version__
from ._files import atomic_path
from .exceptions import FileFormatError, LabelError, LabelExplorerError, NotTrainedError, ShapeError, did_you_mean

__all__ = ["predict_catalog", "train_model", "expand_inputs", "Catalog", "Comparison", "configure_parser", "run",
           "LEDGER_NAME", "META_KEY"]

LEDGER_NAME = "ledger.json"
"""The ledger of done batches inside the ``<stem>.parts`` folder of a run."""
META_KEY = b"labelexplorer"
"""Parquet schema-metadata key holding the catalog's provenance (JSON)."""
ON_ERROR = ("skip", "fail")

_LEDGER_FORMAT = "labelexplorer-catalog-run"
_LEDGER_VERSION = 1
_DATA_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fits.fz", ".jpg", ".jpeg", ".png")
_LIST_SUFFIXES = (".txt", ".lst", ".list")
_PATH_COLUMNS = ("FILE", "PATH", "FILENAME", "FILEPATH", "FILE_PATH", "SPECTRUM_FILE", "SPECTRUM")
_KEY_COLUMNS = ("APOGEE_ID", "ID", "OBJID", "OBSID")
_ROWS_PER_ROW_GROUP = 65_536  # final Parquet row groups: large enough for fast scans, small enough to stream
_MAX_INPUTS_IN_META = 100


# ====================================================================== inputs
def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in suffixes)


def _data_files_under(folder: Path) -> list[str]:
    """Spectrum/image files under *folder* (recursively, sorted, hidden entries skipped)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and _has_suffix(Path(n), _DATA_SUFFIXES)]
    return found


def _path_column(names: Iterable[str], source: str) -> str | None:
    by_upper = {str(n).strip().upper(): n for n in names}
    return next((by_upper[c] for c in _PATH_COLUMNS if c in by_upper), None)


def _resolve_listed(paths: Iterable[str], table: Path) -> list[str]:
    """Paths listed in *table*, relative ones taken relative to the table's folder."""
    out = []
    for value in paths:
        text = str(value).strip()
        if text:
            out.append(text if os.path.isabs(text) else str(table.parent / text))
    return out


def _files_from_csv(path: Path) -> list[str]:
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
        column = _path_column(header, str(path))
        if column is None:
            raise FileFormatError(f"{path}: a table of input files needs a column of paths named one of "
                                  f"{', '.join(_PATH_COLUMNS)} (case-insensitive); found {list(header)[:10]}")
        values = pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False)[column]
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FileFormatError(f"{path}: unreadable CSV table of input files ({exc})") from exc
    return _resolve_listed(values, path)


def _files_from_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: unreadable list of input files ({exc}); expected one path per line") from exc
    return _resolve_listed((line for line in lines if not line.strip().startswith("#")), path)


_CARD, _BLOCK = 80, 2880


def _header_cards(handle, max_blocks: int = 64) -> dict[str, str] | None:
    """The next FITS header's keyword values (raw text, quotes removed), or None at end of file."""
    cards: dict[str, str] = {}
    for _ in range(max_blocks):
        block = handle.read(_BLOCK)
        if len(block) < _BLOCK:
            return None
        for i in range(0, _BLOCK, _CARD):
            card = block[i:i + _CARD].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards
            if card[8:10] == "= ":
                cards[key] = card[10:].split("/")[0].strip().strip("'").strip()
    return None


def _data_bytes(cards: dict[str, str]) -> int:
    """Bytes of the data unit after a header (padded to whole blocks)."""
    axes = int(cards.get("NAXIS", "0") or 0)
    if axes == 0:
        return 0
    size = int(np.prod([int(cards.get(f"NAXIS{i}", "0") or 0) for i in range(1, axes + 1)]))
    size = abs(int(cards.get("BITPIX", "8"))) // 8 * int(cards.get("GCOUNT", "1") or 1) * (
        int(cards.get("PCOUNT", "0") or 0) + size)
    return -(-size // _BLOCK) * _BLOCK


def _table_columns(path: Path) -> list[str]:
    """Column names of HDU1 when it is a binary table, from the raw header cards (cheap on any file)."""
    import gzip

    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as handle:
            primary = _header_cards(handle)
            if primary is None or primary.get("SIMPLE") != "T":
                return []
            handle.seek(_data_bytes(primary), os.SEEK_CUR)
            extension = _header_cards(handle)
    except (OSError, ValueError, EOFError):
        return []
    if not extension or extension.get("XTENSION") != "BINTABLE":
        return []
    return [extension.get(f"TTYPE{i}", "") for i in range(1, int(extension.get("TFIELDS", "0") or 0) + 1)]


def _files_from_fits_table(path: Path) -> list[str] | None:
    """The paths listed in HDU1 of a FITS table (an allStar-like list), or None if it is not one."""
    from astropy.io import fits

    column = _path_column(_table_columns(path), str(path))
    if column is None:
        return None  # a spectrum file (or a bad one, reported when it is read)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True) as hdul:
                values = np.char.strip(np.asarray(hdul[1].data.field(column)).astype(str))
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise FileFormatError(f"{path}: unreadable table of input files ({exc}); expected a FITS binary table "
                              f"with a {column} column of paths") from exc
    return _resolve_listed(values, path)


def _expand_one(item) -> list[str]:
    path = Path(item)
    if path.is_dir():
        if (path / "universe.json").is_file():
            from .mock.universe import Universe

            return [str(p) for p in Universe(path).files("apstar")]
        files = _data_files_under(path)
        if not files:
            raise FileFormatError(f"{path}: folder holds no spectrum or image files "
                                  f"(expected names ending in {', '.join(_DATA_SUFFIXES)})")
        return files
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file or folder (expected spectrum files, a folder of them, "
                              "a table listing them, or a mock universe)")
    if _has_suffix(path, (".csv",)):
        return _files_from_csv(path)
    if _has_suffix(path, _LIST_SUFFIXES):
        return _files_from_list(path)
    if _has_suffix(path, (".fits", ".fit", ".fits.gz", ".fit.gz")):
        listed = _files_from_fits_table(path)
        if listed is not None:
            return listed
    return [str(path)]


def expand_inputs(inputs) -> list[str]:
    """The input files named by *inputs*, in order, each once, as absolute paths.

    Parameters
    ----------
    inputs : path-like or sequence of path-like
        Spectrum (or image) files; folders (searched recursively for ``.fits``,
        ``.fits.gz``, ``.jpg``, ``.png`` files, in sorted order); tables listing files (a CSV
        or a FITS binary table, e.g. allStar-like, with a column ``FILE``/``PATH``/
        ``FILENAME``..., relative paths taken from the table's folder; or a ``.txt`` list,
        one path per line); or a mock-universe folder (its apStar files).

    Returns
    -------
    list of str

    Raises
    ------
    FileFormatError
        A named path does not exist, a folder holds no data files, or a table has no
        column of paths. (Files *listed* in a table that are missing are reported later,
        per file, like any unreadable file.)

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.fits", "a.fits", "notes.md"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> _ = (folder / "list.csv").write_text("file\\nb.fits\\n")
    >>> [pathlib.Path(p).name for p in expand_inputs([folder, folder / "list.csv"])]
    ['a.fits', 'b.fits']
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise LabelExplorerError("inputs: expected at least one file, folder or table of files")
    seen: dict[str, None] = {}
    for item in items:
        for file in _expand_one(item):
            seen.setdefault(os.path.abspath(file), None)
    return list(seen)


# ====================================================================== the model
class _ModelSource(NamedTuple):
    model: Any  # a fitted LabelModel
    directory: Path  # where workers load it from
    fingerprint: str  # hash of the weights and config


def _fingerprint(directory: Path) -> str:
    """A hash of a saved model's files; ``.npz`` archives by their arrays (zip timestamps vary)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                for key in sorted(arrays.files):
                    value = np.ascontiguousarray(arrays[key])
                    digest.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
                    digest.update(value.tobytes())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _model_source(model_or_dir, scratch: Path) -> Iterator[_ModelSource]:
    """The model, a directory holding it and its fingerprint (an in-memory model is saved to *scratch*)."""
    from .models.base import LabelModel, load_model

    if isinstance(model_or_dir, LabelModel):
        if not model_or_dir.is_fitted:
            raise NotTrainedError(f"{type(model_or_dir).__name__} is not trained, so it cannot predict a catalog: "
                                  "call .fit(data, labels) first, or pass a saved model directory")
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".labelexplorer-model-", dir=scratch) as tmp:
            directory = model_or_dir.save(Path(tmp) / "model")
            yield _ModelSource(model_or_dir, directory, _fingerprint(directory))
        return
    if not isinstance(model_or_dir, (str, os.PathLike)):
        raise LabelExplorerError(f"model: expected a trained LabelModel or a saved model directory, "
                                 f"got {type(model_or_dir).__name__}")
    directory = Path(model_or_dir).resolve()
    model = load_model(directory)
    yield _ModelSource(model, directory, _fingerprint(directory))


_WORKER_MODELS: dict[tuple[str, str], Any] = {}


def _worker_model(directory: str, fingerprint: str):
    """The model for a Dask task, loaded once per worker process and checked against the run's hash."""
    from .exceptions import ModelFileError
    from .models.base import load_model

    key = (directory, fingerprint)
    if key not in _WORKER_MODELS:
        if _fingerprint(Path(directory)) != fingerprint:
            raise ModelFileError(f"{directory}: the model changed while the catalog was being computed")
        _WORKER_MODELS.clear()
        _WORKER_MODELS[key] = load_model(directory)
    return _WORKER_MODELS[key]


# ====================================================================== one batch
class _ReadBatch(NamedTuple):
    files: list[str]  # the batch's files, in order
    parts: list  # one Spectra/ImageSet per readable file
    sources: list[str]  # the file of each part
    errors: list[tuple[str, str]]  # (file, message) of unreadable files


class _BatchResult(NamedTuple):
    table: Any  # pyarrow.Table, or None when no file of the batch could be used
    errors: list[tuple[str, str]]
    prediction_meta: dict


def _read_batch(files: Sequence[str], read_options: dict) -> _ReadBatch:
    """Read each file on its own, so that one bad file is named and the others still count."""
    from .io.registry import read

    parts, sources, errors = [], [], []
    for file in files:
        try:
            parts.append(read(file, **read_options))
            sources.append(file)
        except LabelExplorerError as exc:
            errors.append((file, str(exc)))
    return _ReadBatch(list(files), parts, sources, errors)


def _stack(parts: list):
    """One Spectra (or ImageSet) from the parts of a batch."""
    if len(parts) == 1:
        return parts[0]
    kind = type(parts[0])
    if any(type(p) is not kind for p in parts):
        raise ShapeError("batch: files hold different kinds of data (spectra and images)")
    if hasattr(kind, "concatenate"):
        return kind.concatenate(parts)
    import pandas as pd

    from .images import ImageSet

    if kind is not ImageSet:
        raise ShapeError(f"batch: cannot stack {kind.__name__} objects")
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise ShapeError(f"batch: images of different sizes {sorted(shapes)}")
    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.ids for p in parts]),
                    pd.concat([p.catalog for p in parts], ignore_index=True), parts[0].meta)


def _batch_seed(base, first_file: str) -> int:
    """A batch's seed from the model's random_state and its first file's name (not its folder)."""
    text = f"{base}\0{os.path.basename(first_file)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def _seeded(model, first_file: str):
    """Give a model with a ``random_state`` hyperparameter the batch's seed while it predicts."""
    if "random_state" not in model.get_params():
        yield
        return
    base = model.random_state
    model.random_state = _batch_seed(base, first_file)
    try:
        yield
    finally:
        model.random_state = base


def _infer(model, data, first_file: str):
    with _seeded(model, first_file):
        return model.predict(model.prepare(data))


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _prediction_table(prediction, parts: list, sources: list[str]):
    """The batch's columns: ID, labels (+ _ERR, _MODEL_STD, _PRED_STD), flags, SNR, FILE."""
    import pyarrow as pa

    columns = prediction.columns()
    snr = [getattr(p, "snr", None) for p in parts]
    if all(s is not None and np.ndim(s) == 1 and len(s) == len(p) for s, p in zip(snr, parts)):
        columns["SNR"] = np.concatenate(snr).astype(np.float64)
    columns["FILE"] = np.repeat(np.asarray(sources, dtype=str), [len(p) for p in parts])
    return pa.table({name: pa.array(np.asarray(values)) for name, values in columns.items()})


def _predict_read_batch(model, batch: _ReadBatch) -> _BatchResult:
    """Predict a batch; if the batch as a whole fails, file by file, to name the culprits."""
    from .prediction import LabelPrediction

    errors = list(batch.errors)
    if not batch.parts:
        return _BatchResult(None, errors, {})
    try:
        prediction = _infer(model, _stack(batch.parts), batch.sources[0])
        return _BatchResult(_prediction_table(prediction, batch.parts, batch.sources), errors,
                            _jsonable(prediction.meta))
    except LabelExplorerError:
        pass  # some file does not fit the model (pixel count, grid...): find which, keep the others
    good, predictions = [], []
    for part, source in zip(batch.parts, batch.sources):
        try:
            predictions.append(_infer(model, part, source))
            good.append((part, source))
        except LabelExplorerError as exc:
            errors.append((source, str(exc)))
    order = {file: position for position, file in enumerate(batch.files)}
    errors.sort(key=lambda error: order.get(error[0], -1))
    if not predictions:
        return _BatchResult(None, errors, {})
    prediction = LabelPrediction.concatenate(predictions)
    parts, sources = zip(*good)
    return _BatchResult(_prediction_table(prediction, list(parts), list(sources)), errors,
                        _jsonable(prediction.meta))


def _remote_batch(model_dir: str, fingerprint: str, files: list[str], read_options: dict) -> _BatchResult:
    """One batch on a Dask worker."""
    return _predict_read_batch(_worker_model(model_dir, fingerprint), _read_batch(files, read_options))


# ====================================================================== the run on disk
def _work_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}.parts")


def _errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors.csv")


def _part_path(work: Path, batch: int) -> Path:
    return work / f"part-{batch:06d}.parquet"


class _Ledger:
    """Which batches of a run are done (rows, skipped files), kept in ``ledger.json``."""

    def __init__(self, work: Path, key: str, n_batches: int, meta: dict, done: dict | None = None):
        self.work, self.key, self.n_batches, self.meta = work, key, n_batches, meta
        self.done: dict[int, dict] = done or {}

    @property
    def path(self) -> Path:
        return self.work / LEDGER_NAME

    @classmethod
    def start(cls, work: Path, key: str, n_batches: int, meta: dict, resume: bool) -> "_Ledger":
        """Continue the run in *work* if it is the same run (and *resume*), else start afresh."""
        existing = cls.read(work) if work.exists() else None
        if existing is not None and resume:
            if existing.key != key:
                raise LabelExplorerError(
                    f"{work}: holds an unfinished run with another model, other inputs or another batch size; "
                    "pass resume=False (--no-resume) to discard it, or choose another output")
            existing._forget_missing_parts()
            return existing
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        ledger = cls(work, key, n_batches, meta)
        ledger.save()
        return ledger

    @classmethod
    def read(cls, work: Path) -> "_Ledger":
        path = work / LEDGER_NAME
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            if content.get("format") != _LEDGER_FORMAT:
                raise ValueError(f"format is {content.get('format')!r}")
            done = {int(k): v for k, v in content["done"].items()}
            return cls(work, content["key"], int(content["n_batches"]), content["meta"], done)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LabelExplorerError(f"{path}: unreadable catalog ledger ({exc}); expected the JSON written by "
                                     "predict_catalog - pass resume=False to start over") from exc

    def _forget_missing_parts(self) -> None:
        for leftover in self.work.glob(".*.part"):  # temporaries of a killed write
            leftover.unlink(missing_ok=True)
        for batch, entry in list(self.done.items()):
            if entry["rows"] and not _part_path(self.work, batch).is_file():
                del self.done[batch]

    def save(self) -> None:
        content = {"format": _LEDGER_FORMAT, "version": _LEDGER_VERSION, "key": self.key,
                   "n_batches": self.n_batches, "meta": self.meta,
                   "done": {str(k): v for k, v in sorted(self.done.items())}}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(content), encoding="utf-8")

    def record(self, batch: int, result: _BatchResult) -> None:
        """Write the batch's part file, then mark it done (the order that makes a crash harmless)."""
        import pyarrow.parquet as pq

        rows = 0 if result.table is None else result.table.num_rows
        if rows:
            table = result.table.replace_schema_metadata(
                {META_KEY: json.dumps({"prediction": result.prediction_meta}).encode()})
            with atomic_path(_part_path(self.work, batch)) as tmp:
                pq.write_table(table, tmp)
        self.done[batch] = {"rows": rows, "errors": [list(e) for e in result.errors],
                            "prediction_meta": result.prediction_meta}
        self.save()

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [tuple(e) for batch in sorted(self.done) for e in self.done[batch]["errors"]]

    def part_files(self) -> list[Path]:
        return [_part_path(self.work, b) for b in sorted(self.done) if self.done[b]["rows"]]


def _run_key(fingerprint: str, files: list[str], batch_size: int, read_options: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([_LEDGER_VERSION, fingerprint, batch_size, read_options], sort_keys=True,
                             default=str).encode())
    for file in files:
        digest.update(file.encode() + b"\0")
    return digest.hexdigest()[:24]


def _files_digest(files: list[str]) -> str:
    return hashlib.sha256("\0".join(files).encode()).hexdigest()[:16]


# ====================================================================== running the batches
def _check_failure(result: _BatchResult, on_error: str, done: int) -> None:
    if on_error == "fail" and result.errors:
        file, message = result.errors[0]
        named = message if file in message else f"{file}: {message}"
        raise FileFormatError(f"{named} (stopped because on_error='fail'; batches already written: {done}, "
                              "kept: fix or remove the file and run again to resume, or use on_error='skip')")


def _run_in_process(model, batches: list[list[str]], todo: list[int], read_options: dict,
                    deliver: Callable[[int, _BatchResult], None]) -> None:
    """Batches in this process; the next batch is read in a thread while this one is predicted."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelexplorer-read") as reader:
        queue = iter(todo)
        batch = next(queue, None)
        pending = reader.submit(_read_batch, batches[batch], read_options) if batch is not None else None
        while batch is not None:
            read = pending.result()
            following = next(queue, None)
            if following is not None:
                pending = reader.submit(_read_batch, batches[following], read_options)
            deliver(batch, _predict_read_batch(model, read))
            batch = following


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_memory_limit(workers: int) -> int:
    """Bytes per worker: half of the available memory shared out, at least 1 GiB."""
    import psutil

    return max(2**30, int(0.5 * psutil.virtual_memory().available / max(workers, 1)))


@contextlib.contextmanager
def _dask_client(scheduler, workers: int | None):
    """A distributed Client: a given one, one on a new LocalCluster, or one connected to an address."""
    from distributed import Client, LocalCluster

    if hasattr(scheduler, "submit"):
        yield scheduler
        return
    if scheduler == "local":
        n = workers or _available_cores()
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   memory_limit=_worker_memory_limit(n), dashboard_address=None, host="127.0.0.1")
        except RuntimeError as exc:
            raise LabelExplorerError(
                f"scheduler='local': the Dask worker processes failed to start ({exc}). Workers are spawned: in a "
                "script, call predict_catalog under `if __name__ == '__main__':`") from exc
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(str(scheduler), timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise LabelExplorerError(f"scheduler: could not connect to {scheduler!r} ({exc}); expected 'local' or "
                                 "the address of a running dask scheduler, e.g. tcp://host:8786") from exc
    with client:
        yield client


def _run_on_dask(client, source: _ModelSource, batches: list[list[str]], todo: list[int], read_options: dict,
                 deliver: Callable[[int, _BatchResult], None]) -> None:
    """Batches as Dask tasks, a few per worker in flight (memory stays bounded on any survey size)."""
    from distributed import as_completed

    window = 2 * max(1, sum(client.nthreads().values()))
    queue = iter(todo)
    in_flight: dict[str, tuple[int, Any]] = {}

    def submit(batch: int):
        future = client.submit(_remote_batch, str(source.directory), source.fingerprint, batches[batch],
                               read_options, pure=False)
        in_flight[future.key] = (batch, future)
        return future

    running = as_completed([submit(b) for b in itertools.islice(queue, window)])
    try:
        for future in running:
            result = future.result()
            batch, _ = in_flight.pop(future.key)
            deliver(batch, result)
            following = next(queue, None)
            if following is not None:
                running.add(submit(following))
    finally:
        if in_flight:  # stopped early (on_error="fail", Ctrl-C): drop the work nobody will record
            client.cancel([future for _, future in in_flight.values()])


# ====================================================================== the final catalog
def _assemble_parquet(ledger: _Ledger, output: Path, meta: dict) -> int:
    """Stream the parts, in batch order, into one Parquet file (atomically); returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = ledger.part_files()
    schema = pq.read_schema(files[0]).remove_metadata()
    schema = schema.with_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    rows, buffer = 0, []
    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            def flush():
                if buffer:
                    writer.write_table(pa.concat_tables(buffer), row_group_size=_ROWS_PER_ROW_GROUP)
                    buffer.clear()

            for part in files:
                table = pq.read_table(part)
                if table.schema.remove_metadata().names != schema.names:
                    raise ShapeError(f"{part}: columns {table.schema.names} differ from the first part's "
                                     f"{schema.names}; the parts are not from one model")
                buffer.append(table.cast(schema))
                rows += table.num_rows
                if sum(t.num_rows for t in buffer) >= _ROWS_PER_ROW_GROUP:
                    flush()
            flush()
    return rows


def _write_errors(errors: list[tuple[str, str]], path: Path) -> None:
    import pandas as pd

    if not errors:
        path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
        return
    with atomic_path(path) as tmp:
        pd.DataFrame(errors, columns=["file", "message"]).to_csv(tmp, index=False)


def _inputs_meta(inputs) -> list[str]:
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shown = [str(i) for i in items[:_MAX_INPUTS_IN_META]]
    if len(items) > _MAX_INPUTS_IN_META:
        shown.append(f"... and {len(items) - _MAX_INPUTS_IN_META} more")
    return shown


def _check_arguments(batch_size, on_error, workers) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise LabelExplorerError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if on_error not in ON_ERROR:
        raise LabelExplorerError(f"on_error: expected 'skip' or 'fail', got {on_error!r}"
                                 f"{did_you_mean(str(on_error), ON_ERROR)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise LabelExplorerError(f"workers: expected an integer >= 1, got {workers!r}")


def predict_catalog(model_or_dir, inputs, output, *, fits=None, batch_size: int = 256, scheduler=None,
                    workers: int | None = None, on_error: str = "skip", resume: bool = True, progress: bool = True,
                    read_options: dict | None = None) -> "Catalog":
    """Predict labels for every file of a survey into a Parquet (and FITS) catalog, resumably.

    Parameters
    ----------
    model_or_dir : LabelModel or path-like
        A trained model, or a directory written by ``model.save``.
    inputs : path-like or sequence of path-like
        Spectrum files, folders, tables listing files, or a mock universe; see
        :func:`expand_inputs`.
    output : path-like
        The catalog to write (``.parquet``). Work in progress lives in ``<stem>.parts/``
        beside it and is removed once the catalog is complete; skipped files are listed
        in ``<stem>.errors.csv``.
    fits : path-like, optional
        Also write the catalog as a FITS binary table (streamed from the Parquet file).
    batch_size : int
        Files per batch: the unit of reading, prediction, checkpointing and Dask tasks.
    scheduler : None, "local", str or distributed.Client
        None: this process. ``"local"``: a new LocalCluster of *workers* processes (spawned:
        a script must call this under ``if __name__ == "__main__":``). An address
        (``tcp://host:8786``) or a Client: that cluster.
    workers : int, optional
        Worker processes of the local cluster (default: every core available).
    on_error : {"skip", "fail"}
        What a bad input file does: listed in the errors file and skipped, or stops the
        run (batches already written are kept either way).
    resume : bool
        Continue an interrupted run of the same model, inputs and batch size (and return
        an already complete catalog as it is). False starts over.
    progress : bool
        Show a progress bar with the throughput in stars per second.
    read_options : dict, optional
        Passed to :func:`labelexplorer.read` for every file (e.g. ``{"rows": "combined"}``).

    Returns
    -------
    Catalog
        The catalog on disk; ``catalog.errors`` lists the skipped files.

    Raises
    ------
    LabelExplorerError
        Bad arguments, no usable input, an unfinished run of another model/inputs in the
        way (with ``resume=True``), or a bad file with ``on_error="fail"``.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> import labelexplorer as le
    >>> from labelexplorer.mock.writers import write_apstar
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(1)
    >>> teff = rng.uniform(4000, 5000, 6)
    >>> for i, t in enumerate(teff):
    ...     star = dict(APOGEE_ID=f"2M0000000{i}+0000000", NVISITS=1, SNR=100.0, RA=0.0, DEC=0.0, GLON=0.0,
    ...                 GLAT=0.0, J=10.0, H=9.5, K=9.4, TELESCOPE="apo25m", FIELD="mock")
    ...     flux = np.full(8575, 1.0 + t / 1e4, np.float32) + rng.normal(0, 1e-3, 8575).astype(np.float32)
    ...     _ = write_apstar(folder / f"apStar-{i}.fits", star, flux, np.full(8575, 1e-3, np.float32),
    ...                      np.zeros(8575, np.int16))
    >>> model = le.get_model("ridge", alpha=1e-3, n_bootstrap=2).fit(le.read(folder), {"TEFF": teff})
    >>> catalog = predict_catalog(model, folder, folder / "out" / "catalog.parquet", batch_size=4, progress=False)
    >>> len(catalog), catalog.columns[:3], catalog.meta["model"]
    (6, ['ID', 'TEFF', 'TEFF_ERR'], 'ridge')
    """
    _check_arguments(batch_size, on_error, workers)
    read_options = dict(read_options or {})
    output = Path(output).resolve()
    if output.is_dir():
        raise LabelExplorerError(f"output: {output} is a folder; expected a file name such as catalog.parquet")
    files = expand_inputs(inputs)
    with _model_source(model_or_dir, output.parent) as source:
        key = _run_key(source.fingerprint, files, int(batch_size), read_options)
        finished = Catalog.open(output) if resume and output.is_file() else None
        if finished is not None and finished.meta.get("run_key") == key:
            if fits is not None:
                finished.to_fits(fits)
            return finished
        run_meta = _run_meta(source, key, int(batch_size), read_options)
        batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
        ledger = _Ledger.start(_work_dir(output), key, len(batches), run_meta, resume)
        earlier = len(ledger.done)
        todo = [b for b in range(len(batches)) if b not in ledger.done]
        _run_batches(source, batches, todo, ledger, read_options, scheduler, workers, on_error, progress)
        return _finish(ledger, output, fits, files, inputs, scheduler, workers, earlier)


def _run_meta(source: _ModelSource, key: str, batch_size: int, read_options: dict) -> dict:
    """Provenance that is the same for every run of this model on these inputs."""
    try:
        config = json.loads((source.directory / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    return {"model": source.model.name, "model_hash": source.fingerprint,
            "model_package_version": config.get("package_version", ""),
            "training_hash": getattr(source.model, "training_hash_", ""),
            "label_names": list(source.model.label_names_), "batch_size": batch_size,
            "read_options": _jsonable(read_options), "run_key": key}


def _run_batches(source: _ModelSource, batches, todo, ledger: _Ledger, read_options, scheduler, workers, on_error,
                 progress) -> None:
    from tqdm.auto import tqdm

    total = sum(len(b) for b in batches)
    done_files = total - sum(len(batches[b]) for b in todo)
    with tqdm(total=total, initial=done_files, unit="star", desc=f"catalog ({source.model.name})",
              disable=not progress, smoothing=0.1, dynamic_ncols=True) as bar:
        def deliver(batch: int, result: _BatchResult) -> None:
            _check_failure(result, on_error, len(ledger.done))
            ledger.record(batch, result)
            bar.update(len(batches[batch]))

        if scheduler is None:
            _run_in_process(source.model, batches, todo, read_options, deliver)
        else:
            with _dask_client(scheduler, workers) as client:
                _run_on_dask(client, source, batches, todo, read_options, deliver)


def _finish(ledger: _Ledger, output: Path, fits, files, inputs, scheduler, workers, earlier: int) -> "Catalog":
    errors = ledger.errors
    errors_path = _errors_path(output)
    _write_errors(errors, errors_path)
    if not ledger.part_files():
        first = f"; first: {errors[0][1]}" if errors else ""
        raise LabelExplorerError(f"no input file could be used: all {len(files)} failed (listed in {errors_path})"
                                 f"{first}")
    first_batch = min(b for b in ledger.done if ledger.done[b]["rows"])
    meta = {**ledger.meta,
            "prediction": ledger.done[first_batch]["prediction_meta"],
            "n_files": len(files), "n_errors": len(errors), "n_batches": ledger.n_batches,
            "inputs": _inputs_meta(inputs), "input_files_sha256": _files_digest(files),
            # run-to-run provenance: never in the data columns
            "package_version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "host": platform.node(), "python": platform.python_version(),
            "scheduler": "in-process" if scheduler is None else (
                f"local ({workers or _available_cores()} workers)" if scheduler == "local" else str(scheduler)),
            "batches_from_earlier_runs": earlier, "n_rows": sum(entry["rows"] for entry in ledger.done.values())}
    _assemble_parquet(ledger, output, meta)
    catalog = Catalog.open(output)
    if fits is not None:
        catalog.to_fits(fits)
    shutil.rmtree(ledger.work, ignore_errors=True)
    if errors:
        warnings.warn(f"{len(errors)} of {len(files)} input files were skipped (first: {errors[0][0]}); "
                      f"see {errors_path}", stacklevel=3)
    return catalog


# ====================================================================== FITS output
_FITS_FORMATS = {"double": ("D", ">f8"), "float": ("E", ">f4"), "int64": ("K", ">i8"), "int32": ("J", ">i4"),
                 "int16": ("I", ">i2"), "bool": ("L", "S1")}


def _fits_layout(schema, widths: dict[str, int]) -> list[tuple[str, str, str]]:
    """(name, FITS format, numpy dtype) per column."""
    import pyarrow as pa

    layout = []
    for field in schema:
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            width = max(1, widths.get(field.name, 1))
            layout.append((field.name, f"{width}A", f"S{width}"))
        elif str(field.type) in _FITS_FORMATS:
            layout.append((field.name, *_FITS_FORMATS[str(field.type)]))
        else:
            raise ShapeError(f"column {field.name!r}: type {field.type} cannot be written to FITS")
    return layout


def _fits_records(table, layout) -> bytes:
    import pyarrow.compute as pc

    records = np.zeros(table.num_rows, dtype=[(name, dtype) for name, _, dtype in layout])
    for name, form, dtype in layout:
        column = table.column(name)
        if form == "L":
            values = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
            records[name] = np.where(values, b"T", b"F")
        elif form.endswith("A"):
            records[name] = np.char.encode(pc.fill_null(column, "").to_numpy(zero_copy_only=False).astype(str),
                                           "ascii", "replace")
        else:
            records[name] = column.to_numpy(zero_copy_only=False)
    return records.tobytes()


def _fits_header(layout, n_rows: int):
    from astropy.io import fits

    columns = fits.ColDefs([fits.Column(name=name, format=form) for name, form, _ in layout])
    header = fits.BinTableHDU.from_columns(columns, nrows=0).header
    header["NAXIS2"] = n_rows
    header["EXTNAME"] = "CATALOG"
    return header


def _fits_primary(meta: dict) -> bytes:
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    for key, card in (("MODEL", "model"), ("MODELHSH", "model_hash"), ("LEVERS", "package_version"),
                      ("DATE", "created"), ("NROWS", "n_rows")):
        if meta.get(card) is not None:
            primary.header[key] = meta[card]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long-string (CONTINUE) cards are what we want here
        primary.header["LEMETA"] = json.dumps(meta, default=str, sort_keys=True)
    return primary.header.tostring().encode("ascii")


def _write_fits(tables: Callable[[], Iterator], schema, meta: dict, path: Path) -> Path:
    """Write a FITS binary table from an iterator of Arrow tables, without holding them all."""
    import pyarrow.compute as pc

    widths: dict[str, int] = {}
    n_rows = 0
    for table in tables():  # first pass: string widths and row count
        n_rows += table.num_rows
        for name in table.column_names:
            column = table.column(name)
            if str(column.type) in ("string", "large_string") and table.num_rows:
                longest = pc.max(pc.binary_length(column)).as_py() or 0
                widths[name] = max(widths.get(name, 0), longest)
    layout = _fits_layout(schema, widths)
    header = _fits_header(layout, n_rows)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(_fits_primary(meta))
        handle.write(header.tostring().encode("ascii"))
        written = 0
        for table in tables():
            written += handle.write(_fits_records(table, layout))
        handle.write(b"\0" * (-written % 2880))
    return path


# ====================================================================== the Catalog
class Comparison(NamedTuple):
    """Two catalogs on the same stars: ``summary`` per label and per-star ``differences``."""

    summary: Any  # pandas.DataFrame indexed by label: n, bias, sigma_mad, rmse, outliers, calibration, mean_std
    differences: Any  # pandas.DataFrame: key column, <LABEL>_DIFF and <LABEL>_Z per label


def _is_frame(value) -> bool:
    return hasattr(value, "columns") and hasattr(value, "dtypes")


class Catalog:
    """A catalog of predicted labels, on disk (Parquet) or in memory, for notebooks and the dashboard.

    Open one with :meth:`Catalog.open`; :func:`predict_catalog` returns one. On-disk catalogs
    are lazy: ``len`` and ``columns`` read only the Parquet footers, ``head`` the first row
    group, ``filter``/``join``/``crossmatch`` build dask graphs; ``to_pandas()`` (or
    ``to_dask().compute()``) reads the data.

    Parameters
    ----------
    frame : pandas.DataFrame or dask.dataframe.DataFrame
        The rows.
    meta : dict, optional
        Provenance (model, hashes, inputs, date...).

    Examples
    --------
    >>> import pandas as pd
    >>> cat = Catalog(pd.DataFrame({"ID": ["a", "b", "c"], "TEFF": [4500.0, 5200.0, 6100.0],
    ...                             "TEFF_ERR": [50.0, 60.0, 80.0]}), meta={"model": "demo"})
    >>> len(cat), cat.label_names
    (3, ['TEFF'])
    >>> cat.filter("TEFF < 6000").to_pandas()["ID"].tolist()
    ['a', 'b']
    >>> labels = pd.DataFrame({"APOGEE_ID": ["b", "a"], "TEFF": [5150.0, 4400.0]})
    >>> cat.join(labels, on="APOGEE_ID").to_pandas()["TEFF_REF"].tolist()
    [4400.0, 5150.0, nan]
    """

    def __init__(self, frame=None, meta: dict | None = None, *, _files: Sequence[Path] | None = None,
                 _errors: Path | None = None):
        if frame is None and not _files:
            raise LabelExplorerError("Catalog: expected a DataFrame (or use Catalog.open(path))")
        if frame is not None and not _is_frame(frame):
            raise LabelExplorerError(f"Catalog: expected a pandas or dask DataFrame, got {type(frame).__name__}")
        self._frame = frame
        self._files = [Path(f) for f in (_files or [])]
        self._errors_path = _errors
        self.meta: dict = dict(meta or {})

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path) -> "Catalog":
        """Open a catalog: a Parquet file, or a folder of Parquet files (e.g. an unfinished run's parts).

        Raises
        ------
        FileFormatError
            Missing path, a file that is not Parquet, or a folder without Parquet files.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
            if not files:
                raise FileFormatError(f"{path}: folder holds no .parquet files; expected a catalog")
            errors = None
        elif path.is_file():
            files, errors = [path], _errors_path(path)
        else:
            raise FileFormatError(f"{path}: no such catalog (expected a .parquet file or a folder of them)")
        try:
            metadata = pq.read_schema(files[0]).metadata or {}
        except (pa.ArrowInvalid, OSError) as exc:
            raise FileFormatError(f"{files[0]}: not a Parquet catalog ({exc})") from exc
        meta = json.loads(metadata.get(META_KEY, b"{}"))
        if path.is_dir() and (path / LEDGER_NAME).is_file():
            meta = {**_Ledger.read(path).meta, **meta}
        return cls(None, meta, _files=files, _errors=errors)

    @property
    def _on_disk(self) -> bool:
        return self._frame is None

    # ------------------------------------------------------------------ reading
    @property
    def columns(self) -> list[str]:
        """Column names."""
        if self._on_disk:
            import pyarrow.parquet as pq

            return list(pq.read_schema(self._files[0]).names)
        return [str(c) for c in self._frame.columns]

    @property
    def label_names(self) -> list[str]:
        """The predicted labels (columns ``X`` with an ``X_ERR`` beside them)."""
        if self.meta.get("label_names"):
            return list(self.meta["label_names"])
        columns = set(self.columns)
        return [c for c in self.columns if f"{c}_ERR" in columns]

    @property
    def errors(self):
        """The input files that were skipped and why (pandas DataFrame with ``file``, ``message``)."""
        import pandas as pd

        if self._errors_path is not None and self._errors_path.is_file():
            return pd.read_csv(self._errors_path, dtype=str, keep_default_na=False)
        return pd.DataFrame({"file": pd.Series(dtype=str), "message": pd.Series(dtype=str)})

    def __len__(self) -> int:
        if self._on_disk:
            import pyarrow.parquet as pq

            return int(sum(pq.ParquetFile(f).metadata.num_rows for f in self._files))
        return int(len(self._frame))

    def __repr__(self) -> str:
        where = f", {self._files[0]}" if self._on_disk and len(self._files) == 1 else (
            f", {len(self._files)} files" if self._on_disk else "")
        model = self.meta.get("model")
        return (f"<Catalog {len(self)} rows x {len(self.columns)} columns"
                f"{f', model={model!r}' if model else ''}{where}>")

    def to_pandas(self, columns: Sequence[str] | None = None):
        """All rows (or only *columns*) as a pandas DataFrame; provenance in ``.attrs``."""
        if self._on_disk:
            import pyarrow as pa
            import pyarrow.parquet as pq

            frame = pa.concat_tables([pq.read_table(f, columns=self._checked(columns)) for f in self._files]
                                     ).to_pandas()
        else:
            frame = self._frame if columns is None else self._frame[self._checked(columns)]
            frame = frame.compute() if hasattr(frame, "compute") else frame.copy()
        frame.attrs.update(self.meta)
        return frame

    def to_dask(self):
        """The rows as a lazy dask DataFrame (one partition per Parquet file or row-group span)."""
        import dask.dataframe as dd

        if self._on_disk:
            return dd.read_parquet([str(f) for f in self._files])
        if hasattr(self._frame, "compute"):
            return self._frame
        return dd.from_pandas(self._frame, npartitions=max(1, len(self._frame) // 1_000_000))

    def head(self, n: int = 5):
        """The first *n* rows as a pandas DataFrame (reads no more than needed)."""
        if self._on_disk:
            import pyarrow as pa
            import pyarrow.parquet as pq

            batches, rows = [], 0
            for file in self._files:
                for batch in pq.ParquetFile(file).iter_batches(batch_size=max(n, 1)):
                    batches.append(batch)
                    rows += batch.num_rows
                    if rows >= n:
                        break
                if rows >= n:
                    break
            return pa.Table.from_batches(batches).slice(0, n).to_pandas()
        if hasattr(self._frame, "compute"):
            first = self._frame.head(n, compute=True)  # the first partition, usually enough
            if len(first) >= n or self._frame.npartitions == 1:
                return first
            return self._frame.head(n, npartitions=-1)
        return self._frame.head(n)

    def _checked(self, columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        available = self.columns
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise LabelError(f"catalog has no column {unknown[0]!r}{did_you_mean(unknown[0], available)}")
        return list(columns)

    def _frame_or_dask(self):
        return self.to_dask() if self._on_disk else self._frame

    def _new(self, frame, **meta) -> "Catalog":
        return Catalog(frame, {**self.meta, **meta})

    # ------------------------------------------------------------------ selecting and joining
    def filter(self, condition) -> "Catalog":
        """Rows that satisfy *condition*: a query string (``"TEFF < 5000 and LOGG > 2"``), a
        function of the frame returning a boolean column, or a boolean mask with one value per row.

        Raises
        ------
        LabelExplorerError
            A query that does not evaluate, or a mask of the wrong length.
        """
        frame = self._frame_or_dask()
        if isinstance(condition, str):
            try:
                selected = frame.query(condition)
            except Exception as exc:  # pandas/dask raise many types for a bad expression
                raise LabelExplorerError(f"filter: cannot evaluate {condition!r} ({type(exc).__name__}: {exc}); "
                                         f"columns: {self.columns[:12]}...") from exc
            return self._new(selected)
        if callable(condition):
            return self._new(frame[condition(frame)])
        mask = np.asarray(getattr(condition, "to_numpy", lambda: condition)(), dtype=bool)
        table = self.to_pandas()
        if mask.shape != (len(table),):
            raise ShapeError(f"filter: expected a mask of {len(table)} booleans, got shape {mask.shape}")
        return self._new(table[mask].reset_index(drop=True))

    def join(self, table, on: str = "APOGEE_ID", *, key: str = "ID", suffix: str = "_REF") -> "Catalog":
        """Add the columns of a label table (allStar, a CSV, a DataFrame) to every row, matched by ID.

        Parameters
        ----------
        table : path-like, pandas.DataFrame or astropy Table
            A file is read with :func:`labelexplorer.read` (allStar FITS) or pandas (CSV).
        on : str
            The table's ID column (``"APOGEE_ID"``, ``"ID"``, ``"objID"``...).
        key : str
            The catalog's ID column.
        suffix : str
            Appended to table columns whose names the catalog already has (``TEFF_REF``).

        Returns
        -------
        Catalog
            Every row of this catalog (left join); rows without a match hold NaN. When the
            table lists an ID twice, its first row is used.
        """
        labels = _label_table(table)
        if on not in labels.columns:
            raise LabelError(f"join: the label table has no column {on!r}{did_you_mean(on, labels.columns)}")
        if key not in self.columns:
            raise LabelError(f"join: the catalog has no column {key!r}{did_you_mean(key, self.columns)}")
        labels = labels.drop_duplicates(subset=on, keep="first")
        labels = labels.assign(**{on: labels[on].astype(str).str.strip()})
        frame = self._frame_or_dask()
        merged = frame.merge(labels, how="left", left_on=key, right_on=on, suffixes=("", suffix))
        if on != key and on in merged.columns and on not in self.columns:
            merged = merged.drop(columns=[on])
        return self._new(merged, joined=str(getattr(table, "name", "")) or "table")

    def crossmatch(self, other, by: str = "ID", *, suffixes: tuple[str, str] = ("", "_2")) -> "Catalog":
        """Rows of both catalogs with the same *by* value, side by side (inner join).

        Columns present in both get *suffixes* (by default the other catalog's become ``X_2``).
        """
        other = _as_catalog(other)
        for name, catalog in (("this catalog", self), ("the other catalog", other)):
            if by not in catalog.columns:
                raise LabelError(f"crossmatch: {name} has no column {by!r}{did_you_mean(by, catalog.columns)}")
        left, right = self._frame_or_dask(), other._frame_or_dask()
        if hasattr(left, "compute") != hasattr(right, "compute"):
            left, right = self.to_dask(), other.to_dask()
        merged = left.merge(right, how="inner", on=by, suffixes=suffixes)
        return Catalog(merged, {"crossmatch": [self.meta.get("model"), other.meta.get("model")], "by": by})

    def compare(self, other, labels: Sequence[str] | None = None, *, by: str = "ID") -> Comparison:
        """Compare two catalogs of the same stars (e.g. two methods): per-label bias, σ_MAD, RMSE.

        Residuals are ``this − other``; ``calibration`` is the spread of
        ``(this − other) / sqrt(σ_this² + σ_other²)``, 1 when both uncertainties are honest
        and independent (computed with :func:`labelexplorer.analysis.metrics.summarize`).

        Parameters
        ----------
        other : Catalog, path-like or DataFrame
        labels : sequence of str, optional
            Default: the labels both catalogs predict.
        by : str
            The ID column shared by both.

        Returns
        -------
        Comparison
            ``summary`` (one row per label) and ``differences`` (one row per matched star).

        Examples
        --------
        >>> import pandas as pd
        >>> a = Catalog(pd.DataFrame({"ID": ["s1", "s2", "s3"], "LOGG": [2.0, 2.5, 4.4],
        ...                           "LOGG_ERR": [0.1, 0.1, 0.1]}))
        >>> b = Catalog(pd.DataFrame({"ID": ["s3", "s1"], "LOGG": [4.2, 2.1], "LOGG_ERR": [0.1, 0.1]}))
        >>> result = a.compare(b)
        >>> int(result.summary.loc["LOGG", "n"]), round(float(result.summary.loc["LOGG", "bias"]), 2)
        (2, 0.05)
        """
        from .analysis.metrics import summarize

        other = _as_catalog(other)
        names = list(labels) if labels is not None else [n for n in self.label_names if n in other.label_names]
        if not names:
            raise LabelError(f"compare: no label in common (this: {self.label_names}, other: {other.label_names})")

        def columns_of(catalog: "Catalog") -> list[str]:
            wanted = [by] + [c for n in names for c in (n, f"{n}_ERR") if c in catalog.columns or c == n]
            return catalog._checked(wanted)

        a = self.to_pandas(columns_of(self))
        b = other.to_pandas(columns_of(other))
        matched = a.merge(b, on=by, how="inner", suffixes=("_A", "_B"))
        pick = lambda name, side: matched[f"{name}_{side}"].to_numpy(dtype=float)  # noqa: E731
        std = {n: np.hypot(pick(f"{n}_ERR", "A"), pick(f"{n}_ERR", "B")) if f"{n}_ERR_A" in matched else
               np.full(len(matched), np.nan) for n in names}
        summary = summarize({n: pick(n, "A") for n in names}, {n: pick(n, "B") for n in names}, names, std=std)
        differences = {by: matched[by].to_numpy()}
        for name in names:
            difference = pick(name, "A") - pick(name, "B")
            differences[f"{name}_DIFF"] = difference
            with np.errstate(invalid="ignore", divide="ignore"):
                differences[f"{name}_Z"] = difference / std[name]
        import pandas as pd

        return Comparison(summary, pd.DataFrame(differences))

    # ------------------------------------------------------------------ writing
    def _arrow_tables(self) -> tuple[Callable[[], Iterator], Any]:
        """A function giving the rows as a stream of Arrow tables, and their schema."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._on_disk:
            schema = pq.read_schema(self._files[0]).remove_metadata()

            def stream():
                for file in self._files:
                    parquet = pq.ParquetFile(file)
                    for group in range(parquet.num_row_groups):
                        yield parquet.read_row_group(group).cast(schema)

            return stream, schema
        table = pa.Table.from_pandas(self.to_pandas(), preserve_index=False).replace_schema_metadata(None)
        return (lambda: iter([table])), table.schema

    def to_fits(self, path) -> Path:
        """Write the catalog as a FITS binary table (HDU1 ``CATALOG``; provenance in HDU0), streaming.

        Strings become fixed-width ASCII columns, booleans FITS logicals; the primary header holds
        MODEL, MODELHSH, LEVERS, DATE and the whole provenance as JSON (``LEMETA``).

        Examples
        --------
        >>> import tempfile, pathlib, pandas as pd
        >>> from astropy.table import Table
        >>> cat = Catalog(pd.DataFrame({"ID": ["a", "bb"], "TEFF": [4500.0, 5200.0], "FLAG_LOW_SNR": [True, False]}))
        >>> out = cat.to_fits(pathlib.Path(tempfile.mkdtemp()) / "cat.fits")
        >>> Table.read(out, character_as_bytes=False)["ID", "FLAG_LOW_SNR"].as_array().tolist()
        [('a', True), ('bb', False)]
        """
        stream, schema = self._arrow_tables()
        meta = {**self.meta, "n_rows": len(self)}
        return _write_fits(stream, schema, meta, Path(path))


def _as_catalog(other) -> Catalog:
    if isinstance(other, Catalog):
        return other
    if _is_frame(other):
        return Catalog(other)
    if isinstance(other, (str, os.PathLike)):
        return Catalog.open(other)
    raise LabelExplorerError(f"expected a Catalog, a DataFrame or a path to a catalog, got {type(other).__name__}")


def _label_table(table):
    """A label table as a pandas DataFrame (allStar FITS through the readers, CSV through pandas)."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "colnames"):  # astropy Table: keep the one-dimensional columns
        return table[[c for c in table.colnames if table[c].ndim == 1]].to_pandas()
    if isinstance(table, (str, os.PathLike)):
        path = Path(table)
        if not path.is_file():
            raise FileFormatError(f"{path}: no such label table")
        if _has_suffix(path, (".csv",)):
            return pd.read_csv(path)
        from astropy.table import Table

        from .io.registry import read

        try:
            result = read(path)
        except LabelExplorerError:
            try:
                result = Table.read(path, hdu=1)
            except (OSError, ValueError, TypeError) as exc:
                raise FileFormatError(f"{path}: not a label table (expected allStar-like FITS or CSV; {exc})") from exc
        return _label_table(result)
    raise LabelExplorerError(f"label table: expected a path, a pandas DataFrame or an astropy Table, "
                             f"got {type(table).__name__}")


# ====================================================================== training from files
def _key_column(labels, preferred: str | None) -> str:
    columns = {str(c).upper(): c for c in labels.columns}
    if preferred:
        if preferred not in labels.columns:
            raise LabelError(f"label table has no ID column {preferred!r}{did_you_mean(preferred, labels.columns)}")
        return preferred
    for candidate in _KEY_COLUMNS:
        if candidate in columns:
            return columns[candidate]
    raise LabelError(f"label table: no ID column found (expected one of {', '.join(_KEY_COLUMNS)}); pass id_column=")


def train_model(model_name: str, inputs, labels, output, *, label_names: Sequence[str] = ("TEFF", "LOGG", "FE_H"),
                id_column: str | None = None, read_options: dict | None = None, **hyperparameters):
    """Train a registered model on spectrum files and a label table joined by ID, and save it.

    Parameters
    ----------
    model_name : str
        A registered model (``labelexplorer.available_models()``).
    inputs : path-like or sequence
        Training files, as for :func:`expand_inputs` (a mock universe: its apStar files).
    labels : path-like, DataFrame or astropy Table, optional
        Label table (allStar-like FITS or CSV). None for a mock universe: its allStar file.
    output : path-like
        Directory to save the trained model to (written atomically).
    label_names : sequence of str
        Labels to learn (any accepted spelling).
    id_column : str, optional
        ID column of the label table (default: the first of APOGEE_ID, ID, OBJID, OBSID).
    **hyperparameters
        Passed to the model's constructor.

    Returns
    -------
    LabelModel
        The trained, saved model. Files that cannot be read, or whose star has no row in
        the table, are left out (with a warning saying how many).
    """
    from .labels import canonical_label
    from .models.base import get_model

    model = get_model(model_name, **hyperparameters)
    files = expand_inputs(inputs)
    if labels is None:
        universe = Path(inputs) if isinstance(inputs, (str, os.PathLike)) else None
        if universe is None or not (universe / "universe.json").is_file():
            raise LabelExplorerError("labels: a label table is needed (only a mock universe brings its own)")
        labels = universe / "allStar-mock.fits"
    table = _label_table(labels)
    key = _key_column(table, id_column)
    names = [canonical_label(n) for n in label_names]
    read = _read_batch(files, dict(read_options or {}))
    if not read.parts:
        raise LabelExplorerError(f"inputs: none of the {len(files)} files could be read; first: {read.errors[0][1]}")
    data = _stack(read.parts)
    index = {str(v).strip(): i for i, v in reversed(list(enumerate(table[key])))}
    rows = np.array([index.get(str(i).split("/")[0], -1) for i in data.ids])
    if not (rows >= 0).any():
        raise LabelError(f"labels: no spectrum's ID ({data.ids[0]!r}, ...) is in the {key!r} column of the label table")
    keep = rows >= 0
    chosen = table.iloc[rows[keep]].reset_index(drop=True)
    from .labels import label_array

    values, names = label_array(chosen, names)
    known = ~np.all(np.isnan(values), axis=1)
    if (~keep).any() or read.errors or (~known).any():
        warnings.warn(f"training on {int(known.sum())} of {len(files)} files: {len(read.errors)} unreadable, "
                      f"{int((~keep).sum())} without a row in the label table, {int((~known).sum())} without any "
                      f"of {names}", stacklevel=2)
    selected = np.flatnonzero(keep)[known]
    model.fit(data[selected], (values[known], names))
    model.save(output)
    return model


# ====================================================================== command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labelexplorer predict`` or ``labelexplorer train`` (told apart by the parser's name)."""
    command = parser.prog.split()[-1]
    parser.set_defaults(_catalog_command=command)
    if command == "train":
        _configure_train(parser)
    else:
        _configure_predict(parser)


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model directory")
    parser.add_argument("inputs", metavar="INPUTS", nargs="+",
                        help="spectrum files, folders, tables listing files (CSV/FITS with a FILE column), "
                             "or a mock universe")
    parser.add_argument("-o", "--output", required=True, help="catalog to write (.parquet)")
    parser.add_argument("--fits", help="also write the catalog as FITS")
    parser.add_argument("--batch-size", type=int, default=256, help="files per batch (default 256)")
    parser.add_argument("--scheduler", help="'local' for a local Dask cluster, or a scheduler address")
    parser.add_argument("--workers", type=int, help="workers of the local cluster (default: all cores)")
    parser.add_argument("--on-error", choices=ON_ERROR, default="skip", help="skip bad files (default) or stop")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue an interrupted run (default) or start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _configure_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_name", metavar="MODEL_NAME", help="a registered model, e.g. ridge, bcnn, slam")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--universe", help="a mock universe folder (its apStar files and allStar labels)")
    source.add_argument("--spectra", nargs="+", help="training spectrum files, folders or tables of files")
    parser.add_argument("--labels", help="label table (allStar FITS or CSV) joined to the spectra by ID")
    parser.add_argument("--label-names", default="TEFF,LOGG,FE_H", help="labels to learn (default TEFF,LOGG,FE_H)")
    parser.add_argument("--id-column", help="ID column of the label table (default: APOGEE_ID, ID, ...)")
    parser.add_argument("-o", "--output", required=True, help="directory to save the model to")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a hyperparameter (JSON value or text), repeatable")


def _parse_settings(items: Sequence[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LabelExplorerError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = json.loads(value)
        except ValueError:
            settings[key.strip()] = value
    return settings


def run(args: argparse.Namespace) -> int:
    """Run ``labelexplorer predict`` or ``labelexplorer train``."""
    if args._catalog_command == "train":
        if args.universe is None and args.labels is None:
            raise LabelExplorerError("train: --labels is required with --spectra")
        names = [n.strip() for n in args.label_names.split(",") if n.strip()]
        model = train_model(args.model_name, args.universe or args.spectra, args.labels, args.output,
                            label_names=names, id_column=args.id_column, **_parse_settings(args.settings))
        print(f"trained {model.name} on {names}; saved to {args.output}")
        return 0
    catalog = predict_catalog(args.model_dir, args.inputs, args.output, fits=args.fits, batch_size=args.batch_size,
                              scheduler=args.scheduler, workers=args.workers, on_error=args.on_error,
                              resume=args.resume, progress=not args.quiet)
    skipped = len(catalog.errors)
    note = f"; {skipped} files skipped, listed in {_errors_path(Path(args.output).resolve())}" if skipped else ""
    print(f"wrote {len(catalog)} rows to {args.output}{note}")
    return 0
