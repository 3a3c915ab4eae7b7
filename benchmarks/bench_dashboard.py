"""Dashboard figures: first image, click latency, server memory and concurrent sessions.

Each figure is printed next to the naive way, measured in the same run:

1. **Time to first image** of the Teff–logg plane at 10^6 and 10^7 stars (``rasterize``:
   aggregation + the Bokeh model, cold = first call in the process including Numba's
   compilation, warm = a second plot), against drawing every star as a glyph (plain
   ``hv.Points``; only at sizes where it fits in memory), with the bytes each sends to
   the browser.
2. **Click-to-update latency**: the KD-tree search of :class:`NearestStar` (zoom-exact
   screen distance) for clicks on stars and for clicks anywhere in a stretched zoomed
   view (median, 90th percentile, worst), against a naive ``argmin`` over every star,
   and the whole click (search + state update + inspector header and table).
3. **Memory of the server process** (``labelexplorer serve`` on a 10^6-star catalog):
   resident size after start, after the first page, and per extra session.
4. **Concurrent sessions**: sessions are opened one by one (``bokeh.client.pull_session``,
   each holding its own state on the server) while the time to serve a fresh page is
   measured; the run stops when that time doubles, at 20 sessions, or after 60 s.

Usage::

    python benchmarks/bench_dashboard.py [--sizes 1e6 1e7] [--sessions 20] [--serve-stars 1e6]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    """A catalog in the dashboard schema shaped like a survey's HR diagram (giants and dwarfs)."""
    rng = np.random.default_rng(seed)
    giant = rng.random(n) < 0.7
    teff = np.where(giant, rng.normal(4700, 350, n), rng.normal(5600, 600, n))
    logg = np.where(giant, 2.5 + (teff - 4700) / 700 + rng.normal(0, 0.3, n), rng.normal(4.4, 0.15, n))
    feh = rng.normal(-0.2, 0.3, n)
    ids = pd.array([f"S{i:09d}" for i in range(n)], dtype="string[pyarrow]")
    return pd.DataFrame({"ID": ids, "RIDGE__TEFF": teff.astype(np.float32), "RIDGE__LOGG": logg.astype(np.float32),
                         "RIDGE__FE_H": feh.astype(np.float32),
                         "RIDGE__TEFF_ERR": rng.uniform(20, 120, n).astype(np.float32),
                         "TRUE__TEFF": teff.astype(np.float32), "TRUE__LOGG": logg.astype(np.float32)})


def _timed(function) -> tuple[float, object]:
    """Wall-clock seconds of one call (and its result); CPU seconds go to :data:`_CPU`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    _CPU.append(time.process_time() - cpu)
    return time.perf_counter() - wall, result


_CPU: list[float] = []  # CPU seconds of the last timed calls: on a shared machine wall time alone misleads


def first_image(n: int) -> None:
    import holoviews as hv
    from bokeh.embed import json_item

    from labelexplorer.dashboard.state import ExplorerState
    from labelexplorer.dashboard.views.teff_logg import LabelPlane

    catalog = synthetic_catalog(n)
    state = ExplorerState(catalog)
    cold, plot = _timed(lambda: hv.render(LabelPlane(state)._pane.object))
    warm, plot = _timed(lambda: hv.render(LabelPlane(state, colour="TEFF_ERR")._pane.object))
    payload = len(str(json_item(plot)))
    print(f"first image, {n:.0e} stars: rasterize {cold:.2f} s cold ({_CPU[-2]:.2f} s CPU), {warm:.2f} s warm "
          f"({_CPU[-1]:.2f} s CPU), {payload / 1e6:.2f} MB to the browser")
    if n <= 1_000_000:
        points = hv.Points(catalog, ["RIDGE__TEFF", "RIDGE__LOGG"]).opts(invert_xaxis=True, invert_yaxis=True)
        naive, naive_plot = _timed(lambda: hv.render(points))
        naive_payload = len(str(json_item(naive_plot)))
        print(f"  naive scatter of every star: {naive:.2f} s ({_CPU[-1]:.2f} s CPU) before the browser draws "
              f"{n} glyphs, {naive_payload / 1e6:.1f} MB to the browser (x{naive_payload / payload:.0f} bytes)")
    else:
        print(f"  naive scatter of every star: not run ({n * 2 * 8 / 1e6:.0f} MB of coordinates alone)")


def click_latency(n: int, clicks: int = 200) -> None:
    from labelexplorer.dashboard.state import ExplorerState
    from labelexplorer.dashboard.views.inspector import StarInspector
    from labelexplorer.dashboard.views.teff_logg import LabelPlane, NearestStar

    catalog = synthetic_catalog(n, seed=1)
    x, y = catalog["RIDGE__TEFF"].to_numpy(float), catalog["RIDGE__LOGG"].to_numpy(float)
    build, tree = _timed(lambda: NearestStar(x, y))
    rng = np.random.default_rng(2)
    queries = np.column_stack([rng.uniform(4000, 6500, clicks), rng.uniform(1.0, 4.8, clicks)])
    x_range, y_range = (4300.0, 5200.0), (1.5, 3.5)  # a zoomed view: screen distance differs from tree distance

    def naive(qx, qy):
        return int(np.argmin(np.hypot((x - qx) / np.ptp(x_range), (y - qy) / np.ptp(y_range))))

    def per_click(queries, x_range=None, y_range=None):
        times, found = [], []
        for qx, qy in queries:
            start = time.perf_counter()
            found.append(tree.nearest(qx, qy, x_range, y_range))
            times.append(time.perf_counter() - start)
        return np.asarray(times) * 1e3, found

    on_stars = np.column_stack([x, y])[rng.integers(0, n, clicks)] + [5.0, 0.01]  # clicks on the drawn stars
    anywhere, found = per_click(queries, x_range, y_range)
    near, _ = per_click(on_stars)
    naive_time, expected = _timed(lambda: [naive(qx, qy) for qx, qy in queries[:20]])
    naive_ms = naive_time / 20 * 1e3
    assert found[:20] == expected, "KD-tree and naive search disagree"
    print(f"click latency, {n:.0e} stars (KD-tree built once in {build:.2f} s): on a star {np.median(near):.3f} ms "
          f"median; anywhere in a zoomed view {np.median(anywhere):.3f} ms median, {np.percentile(anywhere, 90):.1f} ms "
          f"p90, {anywhere.max():.0f} ms worst; naive argmin {naive_ms:.1f} ms every click "
          f"(x{naive_ms / np.median(anywhere):.0f} median)")
    state = ExplorerState(catalog)
    plane, inspector = LabelPlane(state), StarInspector(state)
    first, _ = _timed(lambda: plane.click(*queries[0]))
    start = time.perf_counter()
    for qx, qy in queries[1:21]:
        plane.click(qx, qy)
    whole = (time.perf_counter() - start) / 20
    print(f"  whole click (search + state + inspector header/table): first {first:.2f} s, then "
          f"{whole * 1e3:.1f} ms; header shows {inspector._header.object.count(state.star)} active star")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _page_time(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return time.perf_counter() - start


def server_load(n: int, max_sessions: int, budget_s: float = 60.0) -> None:
    import psutil
    from bokeh.client import pull_session

    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    path = folder / "catalog.parquet"
    synthetic_catalog(n, seed=3).to_parquet(path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "labelexplorer.cli", "serve", str(path), "--port", str(port),
                               "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = server.stdout.readline().strip()
        process = psutil.Process(server.pid)
        after_start = process.memory_info().rss
        print(f"server, {n:.0e}-star catalog: {ready}")
        baseline = np.median([_page_time(url) for _ in range(3)])
        after_page = process.memory_info().rss
        print(f"  memory: {after_start / 1e6:.0f} MB after the first page, {after_page / 1e6:.0f} MB after 3 more; "
              f"fresh page {baseline:.2f} s")
        sessions, started = [], time.perf_counter()
        latency = baseline
        while len(sessions) < max_sessions and time.perf_counter() - started < budget_s:
            sessions.append(pull_session(url=url))
            latency = np.median([_page_time(url) for _ in range(2)])
            if latency > 2 * baseline:
                break
        rss = process.memory_info().rss
        verdict = "latency doubled" if latency > 2 * baseline else "latency never doubled"
        print(f"  concurrent sessions: {len(sessions)} open, fresh page {latency:.2f} s ({verdict}; limit "
              f"{max_sessions} sessions / {budget_s:.0f} s); {rss / 1e6:.0f} MB, "
              f"{(rss - after_page) / max(len(sessions), 1) / 1e6:.0f} MB per session")
        for session in sessions:
            session.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7], help="catalog sizes (stars)")
    parser.add_argument("--sessions", type=int, default=20, help="most concurrent sessions opened (<= 20)")
    parser.add_argument("--serve-stars", type=float, default=1e6, help="catalog size of the served process")
    args = parser.parse_args(argv)
    for n in map(int, args.sizes):
        first_image(n)
        click_latency(n)
    server_load(int(args.serve_stars), min(args.sessions, 20))


if __name__ == "__main__":
    main()
