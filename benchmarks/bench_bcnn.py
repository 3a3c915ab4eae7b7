"""Throughput of the Bayesian CNNs: MC inference (batched vs naive), bfloat16 vs float32, training.

Measured in the same run, on the device the models choose (CUDA if present, else CPU):

1. MC-dropout inference of the censored network (22 labels, line-list windows, N passes):
   - batched: the deterministic layers (first convolution, each element's first dense layer)
     once per spectrum, the stochastic rest over ``N × spectra`` rows per forward (on a CPU
     the trunk runs them in cache-sized blocks);
   - naive:   N full forward passes (what a plain ``for _ in range(N): model(x)`` does).
   Both draw the same dropout masks (seeded streams), so their outputs are compared too.
   Masks are shared by the spectra of a pass, as the models draw them (``shared=True``;
   inference then takes the trunk's fast path); one mask per spectrum is timed too.
2. bfloat16 autocast vs float32 for that inference: speed and the largest difference of the
   MC mean in units of the float32 total uncertainty (bfloat16 is only worth it within 0.1 σ).
   The network is first trained briefly on toy spectra so that σ is a learned one.
3. On a CPU: the trunk's block size (``SpectrumTrunk.cpu_ensemble_block_rows``); conv2 → ReLU →
   MaxPool(4) as one strided block-Toeplitz convolution vs the plain layers; all cores as
   torch intra-op threads vs one worker thread per core (each with its own chunks).
4. Training throughput (spectra per second, forward + backward + Adam) of both networks.
5. End to end: ``model.predict`` as a user calls it on spectra on the model grid (the chunks
   of spectra in one thread per core, ``precision="auto"``).

Per-CPU-second figures are the ones to compare on a shared machine (wall time there
mostly measures the other jobs).

Usage::

    python benchmarks/bench_bcnn.py [--spectra 128] [--passes 100] [--predict-spectra 512] [--train-spectra 512]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from labelexplorer.labels import ASTRONN_LABELS
from labelexplorer.models.bcnn import BCNN, CensoredBCNN, SpectrumTrunk, mc_samples
from labelexplorer.models.nn import DropoutStreams, autocast, choose_device, n_parameters
from labelexplorer.models.nn.device import flush_denormals
from labelexplorer.preprocess.grid import gap_removed_wavelength
from labelexplorer.spectra import Spectra

WAVELENGTH = gap_removed_wavelength()


def toy_spectra(n: int, seed: int = 0) -> tuple[Spectra, dict]:
    """Spectra whose shape follows 22 random labels through fixed random pixel patterns."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(123).normal(0, 0.02, (len(ASTRONN_LABELS), WAVELENGTH.size))
    labels = rng.normal(0, 1, (n, len(ASTRONN_LABELS)))
    flux = 1 + labels @ patterns + rng.normal(0, 0.01, (n, WAVELENGTH.size))
    table = {name: labels[:, j] for j, name in enumerate(ASTRONN_LABELS)}
    table["TEFF"] = 4700 + 300 * labels[:, 0]
    # every reader fills info["snr"] from the file's header (apStar/aspcapStar SNR), as here: without
    # it, predict takes a median over the pixels of each spectrum for the low_snr flag (~4 % of its time)
    info = {"snr": np.full(n, 100.0)}
    return Spectra(flux, WAVELENGTH, error=np.full(flux.shape, 0.01), info=info), table


def timed(function, repeat: int = 2) -> tuple[float, float, object]:
    """Best wall and CPU time of *repeat* calls (after one warm-up call) and the last result.

    CPU time (this process, all threads) is printed too because on a shared machine the
    wall time mostly measures the other jobs.
    """
    result = function()
    wall = cpu = np.inf
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def mc_benchmark(model: CensoredBCNN, spectra: Spectra, passes: int, device: torch.device) -> None:
    network = model.network_.to(device).eval()
    x = torch.as_tensor(model._design(spectra), device=device)
    chunk, rows = model._mc_layout(passes, x.shape[1], device)

    def run(batched: bool, precision: str = "float32", chunks=None, shared: bool = True):
        outputs = []
        with torch.no_grad(), autocast(device, precision), flush_denormals():
            streams = DropoutStreams(0, device, shared=shared)
            for start in chunks or range(0, len(x), chunk):
                if chunks:  # a worker's chunk: its own streams, any order
                    streams = DropoutStreams(start, device, shared=shared)
                value, log_var = mc_samples(network, x[start:start + chunk], passes, streams, batched=batched,
                                            rows=rows)
                outputs.append((value.float().mean(0), value.float().var(0, unbiased=False),
                                log_var.float().mean(0)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return [torch.cat([o[i] for o in outputs]) for i in range(3)]

    n = len(x)
    rate = lambda wall, cpu: f"{n / wall:8.1f} spectra/s wall, {n / cpu:8.1f} per CPU-second"  # noqa: E731
    fast_wall, fast_cpu, fast = timed(lambda: run(True))
    naive_wall, naive_cpu, naive = timed(lambda: run(False), repeat=1)
    per_row_wall, per_row_cpu, _ = timed(lambda: run(True, shared=False))
    per_row_bf16_wall, per_row_bf16_cpu, _ = timed(lambda: run(True, "bfloat16", shared=False))
    agree = float((fast[0] - naive[0]).abs().max())
    print(f"MC inference, {passes} passes, {n} spectra, chunks of {chunk} spectra, <= {rows} rows per forward, "
          f"trunk blocks of {SpectrumTrunk.cpu_ensemble_block_rows} rows on a CPU "
          f"({SpectrumTrunk.cpu_block_rows} with a mask per spectrum):")
    print(f"  batched, deterministic layers once: {rate(fast_wall, fast_cpu)}")
    print(f"  the same, one mask per spectrum:    {rate(per_row_wall, per_row_cpu)} (bfloat16 "
          f"{n / per_row_bf16_cpu:.1f} per CPU-second)")
    print(f"  naive, {passes} full forwards:        {rate(naive_wall, naive_cpu)}")
    print(f"  speed-up batched/naive: x{naive_wall / fast_wall:.2f} wall, x{naive_cpu / fast_cpu:.2f} CPU; "
          f"same masks -> max |difference| of the means {agree:.2e} (standardised units)")
    if device.type == "cpu":
        projected = 100_000 / (n / fast_cpu) * 100 / passes
        print(f"  the paper's job, 100,000 stars x 100 passes at this rate per CPU-second: {projected:,.0f} s on one "
              f"core, {projected / _cores():,.0f} s on {_cores()} cores as independent workers (paper: 300 s on a GPU)")
    else:
        print(f"  the paper's job, 100,000 stars x 100 passes at this rate: {100_000 / (n / fast_wall) * 100 / passes:,.0f}"
              f" s on this {device.type} device (paper: 300 s on a GPU)")
    bf16_wall, bf16_cpu, reduced = timed(lambda: run(True, "bfloat16"))
    sigma = torch.sqrt(fast[1] + torch.exp(fast[2]))
    worst = (reduced[0] - fast[0]).abs() / sigma
    verdict = "within" if float(worst.max()) < 0.1 else "NOT within"
    print(f"bfloat16 autocast: {rate(bf16_wall, bf16_cpu)} (x{fast_wall / bf16_wall:.2f} wall, "
          f"x{fast_cpu / bf16_cpu:.2f} CPU vs float32); max |mean_bf16 - mean_fp32| / sigma_total = "
          f"{float(worst.max()):.3f} (median {float(worst.median()):.4f}): {verdict} 0.1 sigma")
    if device.type == "cpu":
        block_benchmark(run, n)
        layer_benchmark(network.trunk, network.trunk.stem(x[:chunk]))
        parallel_benchmark(run, n, chunk)


def block_benchmark(run, n: int) -> None:
    """Float32 MC inference for several sizes of the trunk's CPU blocks (``SpectrumTrunk.cpu_ensemble_block_rows``)."""
    default = SpectrumTrunk.cpu_ensemble_block_rows
    figures = []
    try:
        for block in (64, 128, 256, 512, 1 << 30):
            SpectrumTrunk.cpu_ensemble_block_rows = block
            _, cpu, _ = timed(lambda: run(True), repeat=1)
            figures.append(f"{'one block' if block == 1 << 30 else block}: {n / cpu:.1f}")
    finally:
        SpectrumTrunk.cpu_ensemble_block_rows = default
    print(f"  spectra per CPU-second by trunk block rows (default {default}): {', '.join(figures)}")


def layer_benchmark(trunk: SpectrumTrunk, stem: torch.Tensor) -> None:
    """conv2 -> ReLU -> MaxPool(4) on one block of rows: strided Toeplitz convolution vs the plain layers."""
    h = torch.relu(stem.repeat(max(1, SpectrumTrunk.cpu_block_rows // len(stem)), 1, 1))

    def plain():
        out = torch.relu(trunk.conv2(torch.nn.functional.pad(h, (3, 4))))
        return torch.nn.functional.max_pool1d(out, 4).flatten(1)

    with torch.no_grad():
        fast_wall, fast_cpu, fast = timed(lambda: trunk.conv_relu_pool(h), repeat=20)
        plain_wall, plain_cpu, reference = timed(plain, repeat=20)
    print(f"  conv2+ReLU+MaxPool on {len(h)} rows: strided Toeplitz {fast_cpu * 1e6 / len(h):.1f} us/row, "
          f"conv1d+max_pool1d {plain_cpu * 1e6 / len(h):.1f} us/row (CPU time, x{plain_cpu / fast_cpu:.2f}); "
          f"max |difference| {float((fast - reference).abs().max()):.1e}")


def parallel_benchmark(run, n: int, chunk: int) -> None:
    """All cores as torch intra-op threads vs one worker thread (1 intra-op thread) per core."""
    cores = _cores()
    if cores < 2:
        return
    threads = torch.get_num_threads()
    starts = list(range(0, n, chunk))
    if len(starts) < cores:
        print(f"  ({n} spectra make {len(starts)} chunk(s) of {chunk}: too few to compare {cores} workers; use --spectra)")
        return
    try:
        torch.set_num_threads(cores)
        intra_wall, intra_cpu, _ = timed(lambda: run(True), repeat=1)
        torch.set_num_threads(1)
        with ThreadPoolExecutor(cores) as pool:
            workers = lambda: list(pool.map(lambda start: run(True, chunks=[start]), starts))  # noqa: E731
            worker_wall, worker_cpu, _ = timed(workers, repeat=1)
    finally:
        torch.set_num_threads(threads)
    print(f"  {cores} cores: {cores} intra-op threads {n / intra_wall:.1f} spectra/s wall "
          f"({n / intra_cpu:.1f} per CPU-second); {cores} worker threads with 1 intra-op thread each "
          f"{n / worker_wall:.1f} spectra/s wall ({n / worker_cpu:.1f} per CPU-second); load average "
          f"{os.getloadavg()[0]:.1f}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def training_benchmark(spectra: Spectra, labels: dict, epochs: int) -> None:
    print(f"training, {len(spectra)} spectra, {epochs} epochs, batch 64 (including validation passes):")
    for model in (CensoredBCNN(epochs=epochs, early_stopping_patience=epochs, progress=False, mc_passes=4),
                  BCNN(epochs=epochs, early_stopping_patience=epochs, progress=False, mc_passes=4)):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.fit(spectra, labels)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        n_train = int(round(len(spectra) * (1 - model.validation_fraction))) * epochs
        print(f"  {model.name:14s} {n_parameters(model.network_):>10,} parameters: {n_train / wall:8.1f} training "
              f"spectra/s wall, {n_train / cpu:8.1f} per CPU-second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=128,
                        help="spectra for the inference benchmark (two chunks: one per worker on 2 cores)")
    parser.add_argument("--passes", type=int, default=100, help="MC dropout passes")
    parser.add_argument("--predict-spectra", type=int, default=512,
                        help="spectra for model.predict (its first chunk also runs in float32, to check bfloat16)")
    parser.add_argument("--train-spectra", type=int, default=512, help="spectra for the training benchmark")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the training benchmark")
    args = parser.parse_args()

    device = choose_device("auto")
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    train_spectra, train_labels = toy_spectra(args.train_spectra, seed=0)
    training_benchmark(train_spectra, train_labels, args.epochs)

    model = CensoredBCNN(epochs=args.epochs, early_stopping_patience=args.epochs, progress=False, mc_passes=8)
    model.fit(train_spectra, train_labels)
    print(f"censored network: {n_parameters(model.network_):,} parameters (line-list windows), "
          f"{len(model.network_.branches)} element branches")
    spectra, _ = toy_spectra(args.spectra, seed=1)
    mc_benchmark(model, spectra, args.passes, device)
    predict_benchmark(model, toy_spectra(args.predict_spectra, seed=2)[0], args.passes)


def predict_benchmark(model: CensoredBCNN, spectra: Spectra, passes: int) -> None:
    """What a user gets: ``model.predict`` (chunks in one thread per core, precision chosen).

    The toy spectra are on the model's 7514-pixel grid, like the paper's job, so no
    continuum normalisation is timed (from raw 8575-pixel apStar rows it runs at
    ~2,500 spectra/s on 2 cores, and ``predict`` then at ~280 instead of ~320 spectra/s),
    and they carry an S/N as read from files (``info["snr"]``).

    Timed in the steady state of a long job: a first call on a few spectra settles the
    precision (the bfloat16 check runs once per network, not per call).
    """
    model.set_params(mc_passes=passes)
    model.predict(spectra[:8])
    wall, cpu, prediction = timed(lambda: model.predict(spectra), repeat=1)
    rate = len(spectra) / wall
    device = model.network_.trunk.dense1.weight.device
    on_cores = (f", {100_000 / (len(spectra) / cpu) * passes / 100 / _cores():,.0f} s on {_cores()} cores at the CPU "
                "rate" if device.type == "cpu" else f" on this {device.type} device")
    print(f"model.predict, {len(spectra)} spectra, {passes} passes, precision {prediction.meta['precision']}, "
          f"{torch.get_num_threads()} thread(s): {rate:.1f} spectra/s wall ({len(spectra) / cpu:.1f} per CPU-second); "
          f"the paper's job, 100,000 stars x 100 passes: {100_000 / rate * passes / 100:,.0f} s at this wall rate"
          f"{on_cores} (paper: 300 s on a GPU)")
    x = model._design(spectra)
    coverage_wall, _, _ = timed(lambda: model._coverage(x), repeat=1)
    print(f"  of which the training coverage (trunk features, dropout off, and the nearest training spectra): "
          f"{100 * coverage_wall / wall:.1f} % of the wall time ({len(spectra) / coverage_wall:,.0f} spectra/s)")


if __name__ == "__main__":
    main()
