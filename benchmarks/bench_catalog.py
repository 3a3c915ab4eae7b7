"""Catalog throughput for every registered model: batched catalog vs the naive loop, 1 process vs Dask.

For each model of ``labelexplorer.available_models()`` (trained here, quickly, on the mock
universe: spectrum models on its aspcapStar files — APOGEE Net on the raw apStar files it
is made for — image models on its galaxy cutouts)
this measures, in the same run and on the same files:

- naive: one file read + one ``predict`` per star, rows gathered and written at the end;
- catalog: :func:`labelexplorer.catalog.predict_catalog` in this process (batched reads
  with read-ahead, one predict per batch, checkpointed Parquet parts, final Parquet);
- dask: the same on a LocalCluster of ``--workers`` processes (cluster start-up timed apart);

and prints stars/s, the ratio to the naive way, the peak memory (this process and its
children, sampled with psutil), whether the Dask catalog equals the single-process one
(bit for bit, or the largest difference in units of the quoted uncertainty), and an
extrapolation of the measured per-star cost to 650,000 stars on this machine and on N
workers (ideal scaling from the single-process cost, and the measured Dask scaling).

The input survey is the universe's files repeated (hard links) up to ``--n-files``.
Training uses each model's ``quick_hyperparameters``; models with MC passes predict with
their default number of passes (the cost a real catalog pays).

Usage::

    python benchmarks/bench_catalog.py [--n-files 400] [--n-train 120] [--batch-size 64] [--workers 2]
                                       [--models ridge,slam] [--naive-files 60]
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil

import labelexplorer as le
from labelexplorer.catalog import _dask_client, predict_catalog
from labelexplorer.mock import make_universe
from labelexplorer.models.base import model_class

SURVEY_SIZE = 650_000
INFERENCE_DEFAULTS = ("mc_passes",)  # hyperparameters restored to their defaults after a quick training
RAW_FLUX_MODELS = ("apogee-net",)  # trained on and fed raw apStar files; the others on normalised aspcapStar


class PeakMemory:
    """Peak resident memory of this process and all its children while the block runs."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self.start, self._stop = interval, 0, 0, threading.Event()

    def _rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.start = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def __str__(self) -> str:
        return f"peak {self.peak / 2**20:6.0f} MB (+{(self.peak - self.start) / 2**20:5.0f})"


def replicate(files: list[Path], n: int, folder: Path) -> list[Path]:
    """*n* input files made of *files* repeated (hard links; copies where links are not possible)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        source = files[k % len(files)]
        target = folder / f"copy{k // len(files):03d}-{source.name}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)
        out.append(target)
    return out


def train(name: str, universe, workdir: Path):
    """A quickly trained model, saved; and the files it predicts from."""
    cls = model_class(name)
    params = dict(cls.quick_hyperparameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls.input_kind == "images":
            images = universe.images()
            catalog = universe.galaxy_catalog().set_index("objID").loc[list(images.ids)]
            model = cls(**params).fit(images, {"OH_P50": catalog["oh_p50"].to_numpy()})
            files = sorted(universe.galaxy_folder.glob("*.jpg"))
        else:
            kind = "apstar" if name in RAW_FLUX_MODELS else "aspcap"
            spectra = universe.spectra(kind)
            model = cls(**params).fit(spectra, universe.labels(true=True, names=["TEFF", "LOGG", "FE_H"]))
            files = universe.files(kind)
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
    restored = {k: defaults[k] for k in INFERENCE_DEFAULTS if k in model.get_params()}
    model.set_params(**restored)
    return model.save(workdir / f"model-{name}"), files, restored


def naive(model_dir: Path, files: list[Path], out: Path, read_options: dict) -> float:
    """One read and one predict per star; returns the wall time."""
    import pandas as pd

    start = time.perf_counter()
    model = le.load_model(model_dir)
    rows = []
    for path in files:
        data = le.read(str(path), **read_options)
        rows.append(model.predict(model.prepare(data)).to_pandas())
    pd.concat(rows, ignore_index=True).to_parquet(out)
    return time.perf_counter() - start


def agreement(single, parallel) -> str:
    """'bit for bit', or the largest |difference| / total uncertainty over the labels."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(single._files[0]).to_pandas(), pq.read_table(parallel._files[0]).to_pandas()
    if a.equals(b):  # NaN where the other has NaN counts as equal (pyarrow's Table.equals would not)
        return "bit for bit"
    worst = max(float(np.nanmax(np.abs(a[n] - b[n]) / a[f"{n}_ERR"])) for n in single.label_names)
    return f"max |diff| = {worst:.3g} sigma"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def bench_model(name, universe, args, workdir: Path, client, cluster_start: float) -> dict:
    t0 = time.perf_counter()
    model_dir, sources, restored = train(name, universe, workdir)
    train_s = time.perf_counter() - t0
    files = replicate(sources, args.n_files, workdir / f"survey-{name}")
    read_options = {"catalog": False} if model_class(name).input_kind == "images" else {}
    n_naive = min(args.naive_files, len(files))
    with PeakMemory() as naive_memory:
        naive_s = naive(model_dir, files[:n_naive], workdir / f"naive-{name}.parquet", read_options)
    with PeakMemory() as single_memory:
        start = time.perf_counter()
        single = predict_catalog(model_dir, files, workdir / f"single-{name}.parquet", batch_size=args.batch_size,
                                 progress=False, read_options=read_options)
        single_s = time.perf_counter() - start
    with PeakMemory() as dask_memory:
        start = time.perf_counter()
        parallel = predict_catalog(model_dir, files, workdir / f"dask-{name}.parquet", batch_size=args.batch_size,
                                   scheduler=client, progress=False, read_options=read_options)
        dask_s = time.perf_counter() - start
    return dict(name=name, train_s=train_s, restored=restored, n=len(files), n_naive=n_naive,
                naive_rate=n_naive / naive_s, single_rate=len(files) / single_s, dask_rate=len(files) / dask_s,
                naive_memory=naive_memory, single_memory=single_memory, dask_memory=dask_memory,
                agreement=agreement(single, parallel), rows=len(single),
                cluster_start=cluster_start)


def report(result: dict, workers: int, extrapolate_to: list[int]) -> None:
    r = result
    per_star = 1.0 / r["single_rate"]
    print(f"\n== {r['name']}  (trained in {r['train_s']:.1f} s{'; predicting with ' + str(r['restored']) if r['restored'] else ''})")
    print(f"  naive  (read+predict per star, {r['n_naive']} stars): {r['naive_rate']:8.1f} stars/s   "
          f"{r['naive_memory']}")
    print(f"  catalog, 1 process ({r['n']} stars, {r['rows']} rows): {r['single_rate']:8.1f} stars/s   "
          f"{r['single_memory']}   x{r['single_rate'] / r['naive_rate']:.1f} vs naive")
    print(f"  catalog, LocalCluster {workers} workers:       {r['dask_rate']:8.1f} stars/s   "
          f"{r['dask_memory']} (all processes)   x{r['dask_rate'] / r['single_rate']:.2f} vs 1 process   "
          f"[{r['agreement']}]  (cluster start {r['cluster_start']:.1f} s, not included)")
    print(f"  {SURVEY_SIZE:,} stars: naive {hours(SURVEY_SIZE / r['naive_rate'])}, 1 process "
          f"{hours(SURVEY_SIZE * per_star)}, {workers} workers here {hours(SURVEY_SIZE / r['dask_rate'])}; "
          + ", ".join(f"{n} workers (ideal) {hours(SURVEY_SIZE * per_star / n)}" for n in extrapolate_to))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-files", type=int, default=400, help="stars in the benchmark survey")
    parser.add_argument("--n-train", type=int, default=120, help="stars of the mock universe (training set)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-files", type=int, default=60, help="stars timed the naive way")
    parser.add_argument("--models", help="comma-separated subset of the registered models")
    parser.add_argument("--extrapolate-to", default="16,64", help="worker counts for the ideal-scaling line")
    args = parser.parse_args()

    names = args.models.split(",") if args.models else le.available_models()
    print(f"machine: {psutil.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; models: {names}")
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        universe = make_universe(workdir / "universe", n_stars=2 * args.n_train, n_spectra=args.n_train,
                                 n_galaxies=args.n_train if any(model_class(n).input_kind == "images" for n in names)
                                 else 0, n_lamost=0, workers=args.workers, progress=False)
        print(f"mock universe: {args.n_train} spectra in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        with _dask_client("local", args.workers) as client:
            cluster_start = time.perf_counter() - start
            for name in names:
                try:
                    result = bench_model(name, universe, args, workdir, client, cluster_start)
                except Exception as exc:  # one model's failure must not hide the others' figures
                    print(f"\n== {name}: not measured ({type(exc).__name__}: {exc})")
                    continue
                report(result, args.workers, [int(n) for n in args.extrapolate_to.split(",")])


if __name__ == "__main__":
    main()
