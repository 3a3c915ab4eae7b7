"""The data manifest (``data_manifest.yaml``) and ``labelexplorer fetch``.

Every real dataset a user may want is one entry of ``data_manifest.yaml``: a single file
(``kind: file``), a URL pattern with fields such as ``apogee_id`` (``kind: pattern``), or data
the package generates itself (``kind: builtin``, the mock universe). :func:`fetch` downloads an
entry with pooch into a cache and verifies it; ``labelexplorer fetch NAME`` does the same from
the shell.

Where the manifest lives
    The canonical file is ``data_manifest.yaml`` at the repository root. A byte-identical copy
    ships as package data, ``labelexplorer/data/data_manifest.yaml``, so that an installed wheel
    finds it; ``tests/io/test_manifest.py`` fails when the two differ. A checkout reads the root
    file, an installed package its copy (:func:`default_manifest_path`).
Schema
    Documented at the top of the manifest and enforced by :func:`load_manifest`: unknown keys,
    missing keys, malformed checksums and template fields that do not match the declared
    ``fields`` are errors naming the manifest file, the entry and the field.
Cache
    ``cache_dir`` argument, else ``$LABELEXPLORER_CACHE``, else ``pooch.os_cache("labelexplorer")``.
    An entry lands in ``<cache>/<name>/<file>``; for a pattern, ``<file>`` is the ``filename``
    template or the part of the URL path after its last fixed folder (so an apStar file keeps
    its ``telescope/field/`` folders and two stars never collide).
Mirror
    ``base_url`` (``--mirror``), else ``$LABELEXPLORER_MIRROR``, replaces the scheme and host of
    the URL and keeps its path: ``https://data.sdss.org/sas/dr17/...`` becomes
    ``<mirror>/sas/dr17/...``.
Safety
    pooch streams into a temporary file beside the target; its size and checksum are verified
    before it is moved under the final name, so an interrupted or corrupt download never shows
    up in the cache and the next fetch starts afresh. A cached file whose checksum matches is
    returned without touching the network.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import importlib.util
import logging
import os
import re
import string
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

from ..exceptions import DownloadError, FileFormatError, LabelExplorerError, UnknownNameError, did_you_mean

__all__ = [
    "default_manifest_path",
    "load_manifest",
    "list_datasets",
    "get_dataset",
    "dataset_url",
    "default_cache_dir",
    "fetch",
    "configure_parser",
    "run",
]

MANIFEST_NAME = "data_manifest.yaml"
CACHE_ENV = "LABELEXPLORER_CACHE"
MIRROR_ENV = "LABELEXPLORER_MIRROR"

_TEXT_KEYS = ("description", "licence", "citation")
#: kind -> (required keys, optional keys), on top of name, kind and _TEXT_KEYS
_KIND_KEYS = {
    "file": ({"url", "sha256", "size_bytes"}, {"sha1", "checksum_note", "size_is_estimate", "filename"}),
    "pattern": ({"url_template", "fields", "size_bytes"}, {"filename", "files", "checksum_note", "size_is_estimate"}),
    "builtin": ({"generator", "command"}, set()),
}
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}\Z"), "sha1": re.compile(r"[0-9a-f]{40}\Z")}
# Field values become parts of URLs and cache paths: no '/' and no leading '.' keeps them inside both.
_FIELD_VALUE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\Z")


# --------------------------------------------------------------------------- reading the manifest

def default_manifest_path() -> Path:
    """The manifest :func:`load_manifest` reads by default.

    The repository-root ``data_manifest.yaml`` when running from a checkout, else the copy
    shipped inside the package (``labelexplorer/data/data_manifest.yaml``).

    Examples
    --------
    >>> default_manifest_path().name
    'data_manifest.yaml'
    """
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / MANIFEST_NAME).is_file() and (checkout / "pyproject.toml").is_file():
        return checkout / MANIFEST_NAME
    return Path(str(importlib.resources.files("labelexplorer") / "data" / MANIFEST_NAME))


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Read and validate a data manifest; returns its entries by name, in file order.

    Parameters
    ----------
    path : path, optional
        Manifest to read; default :func:`default_manifest_path`.

    Raises
    ------
    FileFormatError
        The file is missing, not YAML, or an entry breaks the schema; the message names the
        file, the entry and the field.

    Examples
    --------
    >>> datasets = load_manifest()
    >>> datasets["apogee-dr17-allstar"]["kind"]
    'file'
    >>> sorted(datasets["apogee-dr17-apstar"]["fields"])
    ['apogee_id', 'field', 'telescope']
    """
    import yaml

    source = Path(path) if path is not None else default_manifest_path()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileFormatError(f"{source}: cannot read the data manifest ({exc.strerror or exc})") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileFormatError(f"{source}: the data manifest is not valid YAML ({exc})") from exc
    if not (isinstance(document, dict) and document.get("version") == 1 and isinstance(document.get("datasets"), list)):
        raise FileFormatError(f"{source}: expected a mapping with 'version: 1' and a 'datasets' list")
    datasets: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(document["datasets"]):
        _validate_entry(entry, index, source)
        if entry["name"] in datasets:
            raise FileFormatError(f"{source}: dataset {entry['name']!r} is listed twice")
        datasets[entry["name"]] = entry
    return datasets


def list_datasets(manifest: str | os.PathLike | Mapping | None = None) -> list[str]:
    """Names of the datasets in the manifest, in file order.

    Examples
    --------
    >>> names = list_datasets()
    >>> "apogee-dr17-allstar" in names and "mock-universe" in names
    True
    """
    return list(_datasets(manifest))


def get_dataset(name: str, manifest: str | os.PathLike | Mapping | None = None) -> dict[str, Any]:
    """The manifest entry called *name*.

    Raises
    ------
    UnknownNameError
        No such entry; the message suggests the closest name.

    Examples
    --------
    >>> get_dataset("astronn-dr17-contmask")["size_bytes"]
    7642
    >>> try:
    ...     get_dataset("apogee-dr17-alstar")
    ... except UnknownNameError as err:
    ...     print(err)
    unknown dataset 'apogee-dr17-alstar' (did you mean 'apogee-dr17-allstar'?); `labelexplorer fetch --list` lists them
    """
    datasets = _datasets(manifest)
    if name not in datasets:
        raise UnknownNameError(
            f"unknown dataset {name!r}{did_you_mean(name, datasets)}; `labelexplorer fetch --list` lists them")
    return datasets[name]


def _datasets(manifest) -> Mapping[str, dict[str, Any]]:
    return manifest if isinstance(manifest, Mapping) else load_manifest(manifest)


# --------------------------------------------------------------------------- schema validation

Check = Callable[[str, str], FileFormatError]  # (field, message) -> error naming file, entry and field


def _validate_entry(entry: Any, index: int, source: Path) -> None:
    def fail(where: str, message: str) -> FileFormatError:
        return FileFormatError(f"{source}: {where}: {message}")

    where = f"dataset #{index + 1}"
    if not isinstance(entry, dict):
        raise fail(where, f"expected a mapping of fields, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(where, f"field 'name' must be lower-case letters, digits, '-' and '.', got {name!r}")
    where = f"dataset {name!r}"
    kind = entry.get("kind")
    if kind not in _KIND_KEYS:
        raise fail(where, f"field 'kind' must be one of {', '.join(_KIND_KEYS)}, got {kind!r}")
    required, optional = _KIND_KEYS[kind]
    required = required | {"name", "kind", *_TEXT_KEYS}
    if missing := sorted(required - entry.keys()):
        raise fail(where, f"missing field(s) {', '.join(missing)} (required for kind {kind})")
    if unknown := sorted(entry.keys() - required - optional):
        raise fail(where, f"unknown field(s) {', '.join(map(str, unknown))}; kind {kind} allows "
                          f"{', '.join(sorted(required | optional))}")

    def check(field: str, message: str) -> FileFormatError:
        return fail(f"{where}, field {field!r}", message)

    for key in _TEXT_KEYS:
        _check_text(entry, key, check)
    {"file": _check_file, "pattern": _check_pattern, "builtin": _check_builtin}[kind](entry, check)


def _check_text(entry: dict, key: str, fail: Check) -> None:
    if not isinstance(entry[key], str) or not entry[key].strip():
        raise fail(key, f"expected non-empty text, got {entry[key]!r}")


def _check_url(url: Any, key: str, fail: Check) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or "{" in parts.netloc:
        raise fail(key, f"expected an http:// or https:// URL with a fixed host, got {url!r}")


def _template_fields(template: str, key: str, fail: Check) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise fail(key, f"malformed template {template!r} ({exc})") from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise fail(key, f"placeholders must be plain names like {{apogee_id}}, got {{{field}}} in {template!r}")
        names.append(field)
    return names


def _check_filename(entry: dict, allowed: set[str], fail: Check) -> list[str]:
    filename = entry.get("filename")
    if filename is None:
        return []
    if not _is_relative_path(filename):
        raise fail("filename", f"expected a relative path inside the cache, got {filename!r}")
    names = _template_fields(filename, "filename", fail)
    if stray := sorted(set(names) - allowed):
        raise fail("filename", f"uses {', '.join(stray)}, which the entry does not declare")
    return names


def _is_relative_path(value: Any) -> bool:
    """A non-empty relative path that stays inside the folder it is joined to."""
    return (isinstance(value, str) and bool(value) and not value.startswith("/") and "\\" not in value
            and all(part not in ("", ".", "..") for part in value.split("/")))


def _check_hex(value: Any, algorithm: str, key: str, fail: Check) -> None:
    if not isinstance(value, str) or not _HEX[algorithm].match(value):
        digits = 64 if algorithm == "sha256" else 40
        raise fail(key, f"expected {digits} lower-case hex digits, got {value!r}")


def _check_size(entry: dict, fail: Check) -> None:
    size = entry["size_bytes"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise fail("size_bytes", f"expected a positive number of bytes or null, got {size!r}")
    estimate = entry.get("size_is_estimate", False)
    if not isinstance(estimate, bool) or (estimate and size is None):
        raise fail("size_is_estimate", f"expected true/false (true only with a size_bytes), got {estimate!r}")


def _check_note(entry: dict, reason: str, fail: Check) -> None:
    note = entry.get("checksum_note")
    if note is None or not isinstance(note, str) or not note.strip():
        raise fail("checksum_note", f"{reason}: add a 'checksum_note' saying why the checksum is unknown")


def _check_file(entry: dict, fail: Check) -> None:
    _check_url(entry["url"], "url", fail)
    if "{" in entry["url"]:
        raise fail("url", "a kind 'file' URL has no {fields}; use kind 'pattern' with url_template")
    parts = urlsplit(entry["url"])
    if entry.get("filename") is None and (parts.query or parts.path.endswith("/") or not parts.path.strip("/")):
        raise fail("url", "the URL has a query or no file name at the end of its path: add a 'filename'")
    _check_filename(entry, set(), fail)
    if entry["sha256"] is not None:
        _check_hex(entry["sha256"], "sha256", "sha256", fail)
    else:
        _check_note(entry, "sha256 is null", fail)
    if "sha1" in entry:
        _check_hex(entry["sha1"], "sha1", "sha1", fail)
    _check_size(entry, fail)


def _check_pattern(entry: dict, fail: Check) -> None:
    template = entry["url_template"]
    _check_url(template, "url_template", fail)
    fields = entry["fields"]
    if not isinstance(fields, dict) or not fields or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in fields.items()):
        raise fail("fields", "expected a mapping of each {placeholder} to a description of what to put there")
    query_part = template.partition("?")[2]
    used = _template_fields(template, "url_template", fail)
    if not used:
        raise fail("url_template", "a pattern needs at least one {field}; use kind 'file' for a fixed URL")
    used += _check_filename(entry, set(fields), fail)
    if undeclared := sorted(set(used) - set(fields)):
        raise fail("url_template", f"uses {', '.join(undeclared)}, missing from 'fields'")
    if unused := sorted(set(fields) - set(used)):
        raise fail("fields", f"declares {', '.join(unused)}, which no template uses")
    if entry.get("filename") is None and "{" in query_part:
        raise fail("url_template", "fields in the query string need a 'filename' template for the cache")
    if "files" in entry:
        _check_known_files(entry["files"], fail)
    else:
        _check_note(entry, "no 'files' checksums", fail)
    _check_size(entry, fail)


def _check_known_files(files: Any, fail: Check) -> None:
    if not isinstance(files, dict) or not files:
        raise fail("files", "expected a mapping of cache file name -> {sha256, size_bytes}")
    for filename, spec in files.items():
        where = f"files[{filename!r}]"
        if not _is_relative_path(filename):
            raise fail("files", f"{filename!r} is not a relative file name")
        if not isinstance(spec, dict) or set(spec) != {"sha256", "size_bytes"}:
            raise fail(where, f"expected exactly sha256 and size_bytes, got {spec!r}")
        _check_hex(spec["sha256"], "sha256", where, fail)
        if isinstance(spec["size_bytes"], bool) or not isinstance(spec["size_bytes"], int) or spec["size_bytes"] <= 0:
            raise fail(where, f"size_bytes must be a positive integer, got {spec['size_bytes']!r}")


def _check_builtin(entry: dict, fail: Check) -> None:
    for key in ("generator", "command"):
        _check_text(entry, key, fail)


# --------------------------------------------------------------------------- URLs and cache paths

def dataset_url(name: str, fields: Mapping[str, Any] | None = None, *, base_url: str | None = None,
                manifest: str | os.PathLike | Mapping | None = None) -> str:
    """The URL :func:`fetch` downloads *name* from.

    Parameters
    ----------
    name : str
        Manifest entry.
    fields : mapping, optional
        Values of a pattern's fields (``apogee_id``, ``telescope``, ...).
    base_url : str, optional
        Mirror replacing scheme and host (the path is kept); default ``$LABELEXPLORER_MIRROR``.
    manifest : path or mapping, optional
        Manifest to use instead of the default one.

    Examples
    --------
    >>> dataset_url("apogee-dr17-apstar", {"telescope": "apo25m", "field": "120+12",
    ...                                    "apogee_id": "2M00001962+6502429"})
    'https://data.sdss.org/sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/120+12/apStar-dr17-2M00001962+6502429.fits'
    >>> dataset_url("astronn-dr17-contmask", base_url="http://mirror.example/raw")
    'http://mirror.example/raw/henrysky/astroNN/master/astroNN/data/dr17_contmask.npy'
    """
    entry = get_dataset(name, manifest)
    return _apply_mirror(_fill_url(entry, _field_values(entry, fields)), _mirror(base_url))


def _field_values(entry: dict, fields: Mapping[str, Any] | None) -> dict[str, str]:
    """Checked field values of *entry*: all declared fields present, nothing else, safe characters."""
    name, given = entry["name"], dict(fields or {})
    if entry["kind"] == "builtin":
        raise _builtin_error(entry)
    declared = entry.get("fields", {})
    if entry["kind"] == "file":
        if given:
            raise LabelExplorerError(f"dataset {name!r} is a single file and takes no fields, got {', '.join(given)}")
        return {}
    for key in given:
        if key not in declared:
            raise LabelExplorerError(f"dataset {name!r} has no field {key!r}{did_you_mean(key, declared)}; "
                                     f"it needs {_describe_fields(declared)}")
    if missing := [key for key in declared if key not in given]:
        raise LabelExplorerError(f"dataset {name!r} is a URL pattern; missing field(s) {', '.join(missing)}. "
                                 f"It needs {_describe_fields(declared)} (command line: --field KEY=VALUE)")
    values = {key: str(value) for key, value in given.items()}
    for key, value in values.items():
        if not _FIELD_VALUE.match(value):
            raise LabelExplorerError(f"field {key}={value!r} of dataset {name!r}: only letters, digits and "
                                     "_ . + - are allowed, and no leading '.'")
    if "files" in entry and (relpath := _cache_relpath(entry, values)) not in entry["files"]:
        raise LabelExplorerError(f"dataset {name!r} has no file {relpath!r}{did_you_mean(relpath, entry['files'])}; "
                                 f"it has {_some(entry['files'])}")
    return values


def _describe_fields(declared: Mapping[str, str]) -> str:
    return "; ".join(f"{key}: {description}" for key, description in declared.items())


def _some(names, shown: int = 8) -> str:
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _fill_url(entry: dict, values: Mapping[str, str]) -> str:
    if entry["kind"] == "file":
        return entry["url"]
    path_part, question, query_part = entry["url_template"].partition("?")
    # '+' is literal in a URL path (APOGEE IDs keep it) but means a space in a query string.
    query_values = {key: quote(value, safe="") for key, value in values.items()}
    return path_part.format(**values) + question + query_part.format(**query_values)


def _cache_relpath(entry: dict, values: Mapping[str, str]) -> str:
    if entry.get("filename"):
        return entry["filename"].format(**values)
    if entry["kind"] == "file":
        return urlsplit(entry["url"]).path.rsplit("/", 1)[-1]
    path_template = entry["url_template"].partition("?")[0]
    fixed = path_template[: path_template.index("{")]
    return path_template[fixed.rfind("/") + 1:].format(**values)


def _mirror(base_url: str | None) -> str | None:
    return base_url if base_url is not None else os.environ.get(MIRROR_ENV) or None


def _apply_mirror(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    parts = urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LabelExplorerError(f"mirror {mirror!r}: expected an http:// or https:// URL")
    original = urlsplit(url)
    return mirror.rstrip("/") + original.path + (f"?{original.query}" if original.query else "")


def _expected(entry: dict, relpath: str) -> tuple[str | None, int | None]:
    """(pooch-style known hash, exact size) a download of *relpath* must have; None where unknown."""
    if entry["kind"] == "pattern":
        spec = entry.get("files", {}).get(relpath)
        return (f"sha256:{spec['sha256']}", spec["size_bytes"]) if spec else (None, None)
    size = None if entry.get("size_is_estimate") else entry["size_bytes"]
    if entry["sha256"]:
        return f"sha256:{entry['sha256']}", size
    return (f"sha1:{entry['sha1']}" if entry.get("sha1") else None), size


def _builtin_error(entry: dict) -> LabelExplorerError:
    return LabelExplorerError(f"dataset {entry['name']!r} is built in, not downloaded: create it with "
                              f"`{entry['command']}` (Python: {entry['generator']}(...))")


# --------------------------------------------------------------------------- downloading

def default_cache_dir() -> Path:
    """Where downloads go by default: ``$LABELEXPLORER_CACHE``, else the user cache folder.

    Examples
    --------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import pooch

    return Path(pooch.os_cache("labelexplorer"))


def fetch(name: str, cache_dir: str | os.PathLike | None = None, *, base_url: str | None = None,
          fields: Mapping[str, Any] | None = None, progress: bool = True,
          manifest: str | os.PathLike | Mapping | None = None, timeout: float = 60.0) -> Path:
    """Download dataset *name* into the cache (once) and return the path of the local file.

    Parameters
    ----------
    name : str
        Entry of the manifest (``labelexplorer fetch --list`` shows them).
    cache_dir : path, optional
        Cache folder; default :func:`default_cache_dir`. The file lands in ``<cache>/<name>/``.
    base_url : str, optional
        Mirror replacing scheme and host of the URL (path kept); default ``$LABELEXPLORER_MIRROR``.
    fields : mapping, optional
        Values of a pattern's fields, e.g. ``{"telescope": "apo25m", "field": "120+12",
        "apogee_id": "2M00001962+6502429"}``.
    progress : bool
        Show a tqdm progress bar on stderr (when tqdm is installed).
    manifest : path or mapping, optional
        Manifest to use instead of the default one.
    timeout : float
        Seconds to wait for the server to connect or send more bytes.

    Returns
    -------
    pathlib.Path
        The verified local file. A cached file whose checksum matches is returned without any
        network access.

    Raises
    ------
    DownloadError
        HTTP error (names URL and status), dropped or timed-out connection, or a size/checksum
        mismatch (names dataset, expected and actual values). Nothing is left in the cache.
    UnknownNameError
        *name* is not in the manifest.
    LabelExplorerError
        Missing or unknown pattern fields, or a ``builtin`` entry (the message says which command
        creates it).

    Examples
    --------
    >>> try:
    ...     fetch("mock-universe")
    ... except LabelExplorerError as err:
    ...     print(err)
    dataset 'mock-universe' is built in, not downloaded: create it with `labelexplorer mock` (Python: labelexplorer.mock.make_universe(...))
    >>> try:
    ...     fetch("lamost-dr5-spectrum")
    ... except LabelExplorerError as err:
    ...     print(str(err).split(".")[0])
    dataset 'lamost-dr5-spectrum' is a URL pattern; missing field(s) obsid
    """
    entry = get_dataset(name, manifest)
    values = _field_values(entry, fields)
    relpath = _cache_relpath(entry, values)
    known_hash, size = _expected(entry, relpath)
    url = _apply_mirror(_fill_url(entry, values), _mirror(base_url))
    folder = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name
    return _download(name, url, folder, relpath, known_hash, size, progress=progress, timeout=timeout)


class _Mismatch(ValueError):
    """A finished download is not the expected file (pooch re-raises ValueErrors unchanged)."""

    def __init__(self, what: str, expected: str, actual: str):
        super().__init__(f"{what}: expected {expected}, got {actual}")
        self.what, self.expected, self.actual = what, expected, actual


class _VerifiedDownload:
    """pooch downloader that checks size and checksum of the temporary file before pooch moves it.

    pooch would verify the hash too, but only with a message that cannot name our dataset; the
    size check also catches truncated bodies from servers that send no Content-Length.
    """

    def __init__(self, download: Callable, known_hash: str | None, size: int | None):
        self._download, self._known_hash, self._size = download, known_hash, size

    def __call__(self, url: str, output_file: str, pooch_object: Any = None) -> None:
        import pooch

        self._download(url, output_file, pooch_object)
        actual_size = os.path.getsize(output_file)
        if self._size is not None and actual_size != self._size:
            raise _Mismatch("size", f"{self._size} bytes", f"{actual_size} bytes")
        if self._known_hash:
            algorithm, expected = self._known_hash.split(":")
            actual = pooch.file_hash(output_file, alg=algorithm)
            if actual != expected:
                raise _Mismatch(f"{algorithm} checksum", expected, actual)


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Silence pooch's INFO messages (they tell users to call pooch.retrieve)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _download(name: str, url: str, folder: Path, relpath: str, known_hash: str | None, size: int | None,
              *, progress: bool, timeout: float) -> Path:
    import pooch
    import requests

    show_bar = bool(progress) and importlib.util.find_spec("tqdm") is not None
    downloader = _VerifiedDownload(pooch.HTTPDownloader(progressbar=show_bar, timeout=timeout), known_hash, size)
    try:
        with _quiet(pooch.get_logger()):
            local = pooch.retrieve(url, known_hash=known_hash, fname=relpath, path=folder, downloader=downloader)
    except _Mismatch as exc:
        raise DownloadError(f"{name}: {exc.what} mismatch for {url}: expected {exc.expected}, got {exc.actual}; "
                            f"the download was discarded and nothing was written to {folder}") from None
    except requests.exceptions.HTTPError as exc:
        response = exc.response
        status = f"{response.status_code} {response.reason}" if response is not None else "error"
        raise DownloadError(f"{name}: HTTP {status} for {url}") from exc
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"{name}: download from {url} failed or was interrupted ({type(exc).__name__}: {exc}); "
                            f"nothing was written to {folder}; run again to retry") from exc
    except OSError as exc:
        raise DownloadError(f"{name}: cannot write into the cache {folder} ({exc.strerror or exc})") from exc
    return Path(local)


# --------------------------------------------------------------------------- command line

def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labelexplorer fetch``.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="fetch")
    >>> configure_parser(parser)
    >>> args = parser.parse_args(["apogee-dr17-apstar", "--field", "telescope=apo25m"])
    >>> args.name, args.field
    ('apogee-dr17-apstar', ['telescope=apo25m'])
    """
    parser.add_argument("name", nargs="?", metavar="NAME", help="dataset to download (see --list)")
    parser.add_argument("--list", action="store_true", help="list the datasets with kind, size and licence")
    parser.add_argument("--cache", metavar="DIR",
                        help=f"cache folder (default: ${CACHE_ENV}, else the user cache folder)")
    parser.add_argument("--mirror", metavar="URL",
                        help=f"download from this host instead, keeping each URL's path (default: ${MIRROR_ENV})")
    parser.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                        help="a field of a URL pattern, e.g. --field apogee_id=2M00001962+6502429 (repeatable)")
    parser.add_argument("--manifest", metavar="PATH", help="read this manifest instead of data_manifest.yaml")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``labelexplorer fetch``: print the local path of the dataset (or the list with --list).

    Examples
    --------
    >>> import io
    >>> parser = argparse.ArgumentParser(prog="fetch")
    >>> configure_parser(parser)
    >>> out = io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     status = run(parser.parse_args(["--list"]))
    >>> status, out.getvalue().split()[:4]
    (0, ['NAME', 'KIND', 'SIZE', 'LICENCE'])
    """
    if args.list:
        print(_table(load_manifest(args.manifest)))
        return 0
    if not args.name:
        raise LabelExplorerError("give the NAME of a dataset to fetch (`labelexplorer fetch --list` lists them)")
    path = fetch(args.name, args.cache, base_url=args.mirror, fields=_parse_fields(args.field),
                 progress=not args.no_progress, manifest=args.manifest)
    print(path)
    return 0


def _parse_fields(items: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise LabelExplorerError(f"--field {item!r}: expected KEY=VALUE, e.g. --field apogee_id=2M00001962+6502429")
        if key.strip() in fields:
            raise LabelExplorerError(f"--field {key.strip()!r} given twice")
        fields[key.strip()] = value.strip()
    return fields


def _table(datasets: Mapping[str, dict[str, Any]]) -> str:
    rows = [("NAME", "KIND", "SIZE", "LICENCE")]
    rows += [(name, entry["kind"], _size_text(entry), entry["licence"]) for name, entry in datasets.items()]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3] for row in rows)


def _size_text(entry: dict) -> str:
    if entry["kind"] == "builtin":
        return "generated"
    if entry["kind"] == "pattern" and "files" in entry:
        return f"{len(entry['files'])} files, {_human(sum(f['size_bytes'] for f in entry['files'].values()))}"
    if entry["size_bytes"] is None:
        return "per file" if entry["kind"] == "pattern" else "unknown"
    approximate = "~" if entry.get("size_is_estimate") else ""
    return approximate + _human(entry["size_bytes"]) + (" per file" if entry["kind"] == "pattern" else "")


def _human(size: int) -> str:
    units, value, power = ("B", "kB", "MB", "GB", "TB"), float(size), 0
    while value >= 1000 and power < len(units) - 1:
        value, power = value / 1000, power + 1
    return f"{size} B" if power == 0 else f"{value:.1f} {units[power]}"
