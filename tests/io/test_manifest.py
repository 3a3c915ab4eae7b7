"""The data manifest and `labelexplorer fetch`, against a local HTTP server on 127.0.0.1.

The server serves the real APOGEE files of the shared data folder (masks, grids, windows), so
downloads are checked byte for byte against files whose content we know.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from labelexplorer import cli
from labelexplorer.exceptions import DownloadError, FileFormatError, LabelExplorerError, UnknownNameError
from labelexplorer.io import manifest as mf

pytestmark = pytest.mark.timeout(60)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0  # seconds a fetch waits for the local server

#: manifest entry -> its file in the shared data folder (same bytes as upstream)
SHARED_FILES = {
    "astronn-dr13-contmask": "apogee/masks/dr13_contmask.npy",
    "astronn-dr14-contmask": "apogee/masks/dr14_contmask.npy",
    "astronn-dr16-contmask": "apogee/masks/dr16_contmask.npy",
    "astronn-dr17-contmask": "apogee/masks/dr17_contmask.npy",
    "astronn-aspcap-l31c-masks": "apogee/masks/aspcap_l31c_masks.npy",
    "payne-apogee-wavelength": "apogee/grid/apogee_wavelength.npz",
    "payne-apogee-mask": "apogee/grid/apogee_mask.npz",
    "cannon-continuum-pixels": "apogee/grid/cannon_cont_pixels_apogee.npz",
    "apogee-cluster-members": "catalogs/clusters_physical_logg.txt",
    "apogee-globular-cluster-abundances": "catalogs/gc_szabolcs.dat",
    "cannon-dr12-labels": "catalogs/apogee_dr12_labels.csv",
    "sdss-galaxy-demo-catalog": "galaxies/sdss_gri_128/train.csv",
}
SHARED_PATTERN_FOLDERS = {"apogee-dr17-windows": "apogee/windows_dr17"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


# --------------------------------------------------------------------------- local HTTP server

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; ``/truncated/<path>`` announces the full length and hangs up halfway."""

    timeout = 10  # a stuck client cannot hang the server thread

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/truncated/"):
            self._send_half(self.path[len("/truncated"):])
        else:
            super().do_GET()

    def _send_half(self, path: str) -> None:
        data = Path(self.translate_path(path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(real_data):
    """An HTTP server on 127.0.0.1 serving ``real_data/apogee`` (masks/, grid/, windows_dr17/)."""
    httpd = _Server(real_data / "apogee")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# --------------------------------------------------------------------------- test manifests

def file_entry(name: str, url: str, sha: str | None, size: int | None = None, **extra) -> dict:
    entry = {"name": name, "kind": "file", "url": url, "sha256": sha, "size_bytes": size,
             "description": "test entry", "licence": "MIT", "citation": "none"}
    if sha is None:
        entry["checksum_note"] = "unknown in this test"
    return {**entry, **extra}


def pattern_entry(name: str, template: str, fields: dict, **extra) -> dict:
    entry = {"name": name, "kind": "pattern", "url_template": template, "fields": fields, "size_bytes": None,
             "description": "test pattern", "licence": "MIT", "citation": "none"}
    if "files" not in extra:
        entry["checksum_note"] = "unknown in this test"
    return {**entry, **extra}


def write_manifest(folder: Path, *entries: dict, name: str = "manifest.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"version": 1, "datasets": list(entries)}, sort_keys=False))
    return path


@pytest.fixture
def mask_file(real_data) -> Path:
    return real_data / "apogee" / "masks" / "dr17_contmask.npy"


@pytest.fixture
def mask_manifest(tmp_path, server, mask_file) -> Path:
    """A manifest whose 'dr17-contmask' points at the local server, with the right checksum."""
    url = f"{server.url}/masks/dr17_contmask.npy"
    return write_manifest(tmp_path, file_entry("dr17-contmask", url, sha256(mask_file), mask_file.stat().st_size))


# --------------------------------------------------------------------------- downloads

def test_fetch_downloads_and_verifies(server, tmp_path, mask_manifest, mask_file):
    cache = tmp_path / "cache"
    path = mf.fetch("dr17-contmask", cache, manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    assert path == cache / "dr17-contmask" / "dr17_contmask.npy"
    assert path.read_bytes() == mask_file.read_bytes()
    mask = np.load(path, allow_pickle=False)
    assert mask.shape == (7514,) and mask.dtype == bool and int(mask.sum()) == 532  # DR17: 532 continuum pixels
    assert server.requests == ["/masks/dr17_contmask.npy"]


def test_cache_hit_does_not_touch_the_network(server, tmp_path, mask_manifest):
    cache = tmp_path / "cache"
    first = mf.fetch("dr17-contmask", cache, manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    stamp = first.stat().st_mtime_ns
    second = mf.fetch("dr17-contmask", cache, manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    assert second == first and second.stat().st_mtime_ns == stamp
    assert len(server.requests) == 1


def test_corrupt_cached_file_is_downloaded_again(server, tmp_path, mask_manifest, mask_file):
    cache = tmp_path / "cache"
    path = mf.fetch("dr17-contmask", cache, manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    path.write_bytes(b"not the mask")
    again = mf.fetch("dr17-contmask", cache, manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    assert again.read_bytes() == mask_file.read_bytes()
    assert len(server.requests) == 2


def test_checksum_mismatch_leaves_nothing_in_cache(server, tmp_path, mask_file):
    wrong = "0" * 64
    manifest = write_manifest(tmp_path, file_entry("dr17-contmask", f"{server.url}/masks/dr17_contmask.npy", wrong))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        mf.fetch("dr17-contmask", cache, manifest=manifest, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert "dr17-contmask" in message and wrong in message and sha256(mask_file) in message
    assert cached_files(cache) == []


def test_size_mismatch_without_checksum_leaves_nothing_in_cache(server, tmp_path, mask_file):
    manifest = write_manifest(tmp_path, file_entry("dr17-contmask", f"{server.url}/masks/dr17_contmask.npy",
                                                   None, size=mask_file.stat().st_size + 1))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"size mismatch.*expected 7643 bytes, got 7642 bytes"):
        mf.fetch("dr17-contmask", cache, manifest=manifest, progress=False, timeout=TIMEOUT)
    assert cached_files(cache) == []


def test_http_404_names_url_and_status(server, tmp_path):
    url = f"{server.url}/masks/dr99_contmask.npy"
    manifest = write_manifest(tmp_path, file_entry("missing", url, None))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        mf.fetch("missing", cache, manifest=manifest, progress=False, timeout=TIMEOUT)
    assert url in str(info.value) and "404" in str(info.value)
    assert cached_files(cache) == []


@pytest.mark.parametrize("checksum", [False, True], ids=["without-checksum", "with-checksum"])
def test_interrupted_download_leaves_nothing_and_retry_works(server, tmp_path, mask_file, checksum):
    sha = sha256(mask_file) if checksum else None
    cut = write_manifest(tmp_path, file_entry("dr17-contmask", f"{server.url}/truncated/masks/dr17_contmask.npy", sha),
                         name="cut.yaml")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="interrupted"):
        mf.fetch("dr17-contmask", cache, manifest=cut, progress=False, timeout=TIMEOUT)
    assert cached_files(cache) == []  # neither under the final name nor as a temporary file

    good = write_manifest(tmp_path, file_entry("dr17-contmask", f"{server.url}/masks/dr17_contmask.npy", sha),
                          name="good.yaml")
    path = mf.fetch("dr17-contmask", cache, manifest=good, progress=False, timeout=TIMEOUT)
    assert path.read_bytes() == mask_file.read_bytes()
    assert cached_files(cache) == [path]


def test_refused_connection_is_a_download_error(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest = write_manifest(tmp_path, file_entry("nothing", f"http://127.0.0.1:{port}/x.npy", None))
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        mf.fetch("nothing", tmp_path / "cache", manifest=manifest, progress=False, timeout=TIMEOUT)


def test_progress_bar_is_shown_on_stderr(server, tmp_path, mask_manifest, capsys):
    mf.fetch("dr17-contmask", tmp_path / "cache", manifest=mask_manifest, progress=True, timeout=TIMEOUT)
    captured = capsys.readouterr()
    assert "100%" in captured.err and captured.out == ""


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_mirror_replaces_host_and_keeps_path(server, tmp_path, mask_file, monkeypatch, how):
    # example.invalid never resolves: the download can only succeed through the mirror.
    manifest = write_manifest(tmp_path, file_entry("dr17-contmask", "https://example.invalid/masks/dr17_contmask.npy",
                                                   sha256(mask_file)))
    base_url = server.url if how == "argument" else None
    if how == "environment":
        monkeypatch.setenv(mf.MIRROR_ENV, server.url)
    path = mf.fetch("dr17-contmask", tmp_path / "cache", base_url=base_url, manifest=manifest,
                    progress=False, timeout=TIMEOUT)
    assert path.read_bytes() == mask_file.read_bytes()
    assert server.requests == ["/masks/dr17_contmask.npy"]


def test_cache_folder_from_environment(server, tmp_path, mask_manifest, monkeypatch):
    monkeypatch.setenv(mf.CACHE_ENV, str(tmp_path / "env-cache"))
    path = mf.fetch("dr17-contmask", manifest=mask_manifest, progress=False, timeout=TIMEOUT)
    assert path == tmp_path / "env-cache" / "dr17-contmask" / "dr17_contmask.npy"


# --------------------------------------------------------------------------- URL patterns

@pytest.fixture
def windows_manifest(tmp_path, server, real_data) -> Path:
    windows = real_data / "apogee" / "windows_dr17"
    files = {name: {"sha256": sha256(windows / name), "size_bytes": (windows / name).stat().st_size}
             for name in ("Mg.wind", "Mg.filt")}
    return write_manifest(
        tmp_path,
        pattern_entry("windows", f"{server.url}/windows_dr17/{{file}}", {"file": "window file name"}, files=files),
        pattern_entry("by-folder", f"{server.url}/{{folder}}/{{file}}", {"folder": "folder", "file": "file name"}),
    )


def test_pattern_fetch_fills_fields_and_verifies(server, tmp_path, windows_manifest):
    path = mf.fetch("windows", tmp_path / "cache", fields={"file": "Mg.wind"}, manifest=windows_manifest,
                    progress=False, timeout=TIMEOUT)
    assert path == tmp_path / "cache" / "windows" / "Mg.wind"
    first_window = np.loadtxt(path)[0]
    np.testing.assert_allclose(first_window, [15233.924, 15238.429, 0.0])  # first Mg window, in Angstrom
    assert server.requests == ["/windows_dr17/Mg.wind"]


def test_pattern_keeps_folders_below_the_fixed_prefix(server, tmp_path, windows_manifest, mask_file):
    path = mf.fetch("by-folder", tmp_path / "cache", fields={"folder": "masks", "file": "dr17_contmask.npy"},
                    manifest=windows_manifest, progress=False, timeout=TIMEOUT)
    assert path == tmp_path / "cache" / "by-folder" / "masks" / "dr17_contmask.npy"
    assert path.read_bytes() == mask_file.read_bytes()


@pytest.mark.parametrize(
    "name, fields, expected",
    [
        ("by-folder", {"file": "x.npy"}, r"missing field\(s\) folder.*folder: folder; file: file name"),
        ("by-folder", {"folder": "masks", "file": "x", "flie": "y"}, r"no field 'flie' \(did you mean 'file'\?\)"),
        ("by-folder", {"folder": "..", "file": "x"}, r"field folder='\.\.'.*only letters, digits"),
        ("by-folder", {"folder": "a/b", "file": "x"}, r"field folder='a/b'"),
        ("windows", {"file": "Mg.flt"}, r"no file 'Mg\.flt' \(did you mean 'Mg\.filt'\?\)"),
    ],
    ids=["missing-field", "misspelt-field", "parent-folder-value", "slash-in-value", "file-not-listed"],
)
def test_pattern_field_errors_are_caught_before_any_request(server, tmp_path, windows_manifest, name, fields, expected):
    with pytest.raises(LabelExplorerError, match=expected):
        mf.fetch(name, tmp_path / "cache", fields=fields, manifest=windows_manifest, progress=False, timeout=TIMEOUT)
    assert server.requests == []


def test_file_entry_takes_no_fields(tmp_path, mask_manifest):
    with pytest.raises(LabelExplorerError, match="single file and takes no fields"):
        mf.fetch("dr17-contmask", tmp_path, fields={"apogee_id": "x"}, manifest=mask_manifest)


def test_real_pattern_url_and_query_encoding():
    url = mf.dataset_url("sdss-dr14-cutout", {"ra": "150.1", "dec": "+2.2", "scale": "0.2"})
    assert url.endswith("getjpeg?ra=150.1&dec=%2B2.2&scale=0.2&width=128&height=128")  # '+' is a space in queries
    apstar = mf.dataset_url("apogee-dr14-apstar", {"location_id": "4102", "apogee_id": "2M00452143+1634446"})
    assert apstar.endswith("/r8/stars/apo25m/4102/apStar-r8-2M00452143+1634446.fits")


def test_builtin_entry_says_which_command_creates_it(tmp_path):
    with pytest.raises(LabelExplorerError, match="`labelexplorer mock`") as info:
        mf.fetch("mock-universe", tmp_path)
    assert not isinstance(info.value, DownloadError)


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(UnknownNameError, match="did you mean 'astronn-dr17-contmask'"):
        mf.fetch("astronn-dr17-contmsk")


# --------------------------------------------------------------------------- command line

@pytest.fixture
def fetch_only_cli(monkeypatch):
    """The real CLI with only the fetch command, so other commands' imports cannot interfere."""
    monkeypatch.setattr(cli, "COMMANDS", {"fetch": cli.COMMANDS["fetch"]})
    return cli.main


def test_cli_fetch_end_to_end(server, tmp_path, mask_manifest, mask_file, fetch_only_cli, capsys):
    cache = tmp_path / "cache"
    status = fetch_only_cli(["fetch", "dr17-contmask", "--manifest", str(mask_manifest), "--cache", str(cache),
                             "--no-progress"])
    printed = Path(capsys.readouterr().out.strip())
    assert status == 0
    assert printed == cache / "dr17-contmask" / "dr17_contmask.npy"
    assert printed.read_bytes() == mask_file.read_bytes()


def test_cli_fetch_pattern_with_fields(server, tmp_path, windows_manifest, fetch_only_cli, capsys):
    status = fetch_only_cli(["fetch", "by-folder", "--manifest", str(windows_manifest), "--cache", str(tmp_path / "c"),
                             "--field", "folder=grid", "--field", "file=apogee_wavelength.npz", "--no-progress"])
    printed = Path(capsys.readouterr().out.strip())
    assert status == 0
    with np.load(printed, allow_pickle=False) as data:
        wavelength = data[data.files[0]]
    assert wavelength.shape == (7214,) and 15100 < wavelength.min() < wavelength.max() < 17000


def test_cli_mirror_option(server, tmp_path, mask_file, fetch_only_cli, capsys):
    manifest = write_manifest(tmp_path, file_entry("dr17-contmask", "https://example.invalid/masks/dr17_contmask.npy",
                                                   sha256(mask_file)))
    status = fetch_only_cli(["fetch", "dr17-contmask", "--manifest", str(manifest), "--cache", str(tmp_path / "c"),
                             "--mirror", server.url, "--no-progress"])
    assert status == 0 and Path(capsys.readouterr().out.strip()).read_bytes() == mask_file.read_bytes()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["fetch", "astronn-dr17-contmsk"], "did you mean 'astronn-dr17-contmask'"),
        (["fetch", "lamost-dr5-spectrum", "--field", "obsid"], "expected KEY=VALUE"),
        (["fetch", "lamost-dr5-spectrum"], "missing field(s) obsid"),
        (["fetch", "mock-universe"], "labelexplorer mock"),
        (["fetch"], "--list"),
    ],
    ids=["misspelt-name", "field-without-value", "missing-field", "builtin", "no-name"],
)
def test_cli_errors_exit_2_with_a_message(fetch_only_cli, capsys, argv, expected):
    assert fetch_only_cli(argv) == 2
    assert expected in capsys.readouterr().err


def test_cli_list_shows_size_and_licence(fetch_only_cli, capsys):
    assert fetch_only_cli(["fetch", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "~4.0 GB" in lines["apogee-dr17-allstar"] and "SDSS" in lines["apogee-dr17-allstar"]
    assert "7.6 kB" in lines["astronn-dr17-contmask"] and "MIT" in lines["astronn-dr17-contmask"]
    assert "89 files" in lines["apogee-dr17-windows"]
    assert "generated" in lines["mock-universe"]


# --------------------------------------------------------------------------- the real manifest

def test_real_manifest_is_valid_and_complete():
    datasets = mf.load_manifest(PROJECT_ROOT / "data_manifest.yaml")
    expected = {"apogee-dr17-allstar", "apogee-dr17-apstar", "apogee-dr17-aspcapstar", "apogee-dr14-apstar",
                "apogee-dr13-apstar", "lamost-dr5-spectrum", "lamost-dr8-spectrum", "sdss-dr14-cutout",
                "sdss-galaxy-demo-catalog", "astronn-dr17-contmask", "astronn-aspcap-l31c-masks",
                "apogee-dr17-windows", "cannon-continuum-pixels", "mock-universe"}
    assert expected <= set(datasets)
    allstar = datasets["apogee-dr17-allstar"]
    assert allstar["url"].endswith("/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits")
    assert allstar["sha256"] is None and allstar["checksum_note"] and allstar["size_is_estimate"]
    assert datasets["mock-universe"]["kind"] == "builtin"


def test_packaged_manifest_is_identical_to_the_root_one():
    packaged = PROJECT_ROOT / "labelexplorer" / "data" / "data_manifest.yaml"
    assert packaged.read_bytes() == (PROJECT_ROOT / "data_manifest.yaml").read_bytes(), (
        "labelexplorer/data/data_manifest.yaml is stale: cp data_manifest.yaml labelexplorer/data/")
    assert mf.default_manifest_path() == PROJECT_ROOT / "data_manifest.yaml"


def test_manifest_checksums_match_the_shared_files(real_data):
    datasets = mf.load_manifest(PROJECT_ROOT / "data_manifest.yaml")
    checked = 0
    for name, relative in SHARED_FILES.items():
        path = real_data / relative
        assert datasets[name]["sha256"] == sha256(path), name
        assert datasets[name]["size_bytes"] == path.stat().st_size, name
        checked += 1
    for name, relative in SHARED_PATTERN_FOLDERS.items():
        files = datasets[name]["files"]
        assert sorted(files) == sorted(p.name for p in (real_data / relative).iterdir() if p.is_file())
        for filename, spec in files.items():
            path = real_data / relative / filename
            assert (spec["sha256"], spec["size_bytes"]) == (sha256(path), path.stat().st_size), filename
            checked += 1
    assert checked == len(SHARED_FILES) + 89


# --------------------------------------------------------------------------- schema errors

def _valid_file() -> dict:
    return file_entry("ok", "https://example.org/data/ok.npy", "a" * 64, 10)


def _valid_pattern() -> dict:
    return pattern_entry("pat", "https://example.org/{a}/x-{b}.fits", {"a": "first", "b": "second"})


SCHEMA_ERRORS = {
    "bad-name": (lambda: {**_valid_file(), "name": "Bad Name"}, "'name'"),
    "bad-kind": (lambda: {**_valid_file(), "kind": "archive"}, "'kind'"),
    "missing-licence": (lambda: {k: v for k, v in _valid_file().items() if k != "licence"}, "licence"),
    "unknown-key": (lambda: {**_valid_file(), "sha512": "x"}, "sha512"),
    "short-sha256": (lambda: {**_valid_file(), "sha256": "abc"}, "'sha256'"),
    "null-sha256-without-note": (lambda: {**_valid_file(), "sha256": None}, "checksum_note"),
    "ftp-url": (lambda: {**_valid_file(), "url": "ftp://example.org/x.npy"}, "'url'"),
    "negative-size": (lambda: {**_valid_file(), "size_bytes": -1}, "'size_bytes'"),
    "filename-escapes-cache": (lambda: {**_valid_file(), "filename": "../x.npy"}, "'filename'"),
    "pattern-undeclared-field": (lambda: {**_valid_pattern(), "fields": {"a": "first"}}, "'url_template'"),
    "pattern-unused-field": (lambda: {**_valid_pattern(), "fields": {"a": "1", "b": "2", "c": "3"}}, "'fields'"),
    "pattern-query-without-filename": (
        lambda: pattern_entry("pat", "https://example.org/get?ra={ra}", {"ra": "degrees"}), "'url_template'"),
    "pattern-bad-files": (lambda: {**_valid_pattern(), "files": {"x.fits": {"sha256": "zz"}}}, "files['x.fits']"),
    "builtin-without-command": (
        lambda: {"name": "gen", "kind": "builtin", "generator": "m.f", "description": "d", "licence": "l",
                 "citation": "c"}, "command"),
}


@pytest.mark.parametrize("make_entry, field", list(SCHEMA_ERRORS.values()), ids=list(SCHEMA_ERRORS))
def test_schema_errors_name_file_entry_and_field(tmp_path, make_entry, field):
    entry = make_entry()
    path = write_manifest(tmp_path, _valid_file() if entry["name"] != "ok" else _valid_pattern(), entry)
    with pytest.raises(FileFormatError) as info:
        mf.load_manifest(path)
    message = str(info.value)
    assert str(path) in message and field in message
    assert repr(entry["name"]) in message or "dataset #2" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version: 1\ndatasets: [\n", "not valid YAML"),
        ("version: 2\ndatasets: []\n", "'version: 1'"),
        ("- just a list\n", "'datasets' list"),
        ("version: 1\ndatasets: [7]\n", "dataset #1: expected a mapping"),
    ],
    ids=["broken-yaml", "wrong-version", "not-a-mapping", "entry-not-a-mapping"],
)
def test_document_errors_name_the_file(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(FileFormatError, match=expected) as info:
        mf.load_manifest(path)
    assert str(path) in str(info.value)


def test_duplicate_and_missing_manifests(tmp_path):
    path = write_manifest(tmp_path, _valid_file(), _valid_file())
    with pytest.raises(FileFormatError, match="'ok' is listed twice"):
        mf.load_manifest(path)
    with pytest.raises(FileFormatError, match="cannot read the data manifest"):
        mf.load_manifest(tmp_path / "nowhere.yaml")
