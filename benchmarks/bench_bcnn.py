"""Throughput of the Bayesian CNNs: MC inference (batched vs naive), bfloat16 vs float32, training.

Measured in the same run, on the device the models choose (CUDA if present, else CPU):

1. MC-dropout inference of the censored network (22 labels, line-list windows, N passes):
   - batched: the deterministic layers (first convolution, each element's first dense layer)
     once per spectrum, the stochastic rest over ``N × spectra`` rows in one forward;
   - naive:   N full forward passes (what a plain ``for _ in range(N): model(x)`` does).
   Both draw the same dropout masks (seeded streams), so their outputs are compared too.
2. bfloat16 autocast vs float32 for that inference: speed and the largest difference of the
   MC mean in units of the float32 total uncertainty (bfloat16 is only worth it within 0.1 σ).
   The network is first trained briefly on toy spectra so that σ is a learned one.
3. Training throughput (spectra per second, forward + backward + Adam) of both networks.

Usage::

    python benchmarks/bench_bcnn.py [--spectra 64] [--passes 100] [--train-spectra 512]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from labelexplorer.labels import ASTRONN_LABELS
from labelexplorer.models.bcnn import BCNN, CensoredBCNN, mc_samples
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
    return Spectra(flux, WAVELENGTH, error=np.full(flux.shape, 0.01)), table


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

    def run(batched: bool, precision: str = "float32", rows_per_forward: int | None = rows):
        streams = DropoutStreams(0, device)
        outputs = []
        with torch.no_grad(), autocast(device, precision), flush_denormals():
            for start in range(0, len(x), chunk):
                value, log_var = mc_samples(network, x[start:start + chunk], passes, streams, batched=batched,
                                            rows=rows_per_forward)
                outputs.append((value.float().mean(0), value.float().var(0, unbiased=False),
                                log_var.float().mean(0)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return [torch.cat([o[i] for o in outputs]) for i in range(3)]

    n = len(x)
    fast_wall, fast_cpu, fast = timed(lambda: run(True))
    whole_wall, whole_cpu, _ = timed(lambda: run(True, rows_per_forward=None), repeat=1)
    naive_wall, naive_cpu, naive = timed(lambda: run(False), repeat=1)
    agree = float((fast[0] - naive[0]).abs().max())
    print(f"MC inference, {passes} passes, {n} spectra, chunks of {chunk} spectra, <= {rows} rows per forward:")
    rate = lambda wall, cpu: f"{n / wall:8.1f} spectra/s wall, {n / cpu:8.1f} per CPU-second"  # noqa: E731
    print(f"  batched, deterministic layers once:     {rate(fast_wall, fast_cpu)}")
    print(f"  same, all {passes} passes in one forward: {rate(whole_wall, whole_cpu)}")
    print(f"  naive, {passes} full forwards:            {rate(naive_wall, naive_cpu)}")
    print(f"  speed-up batched/naive: x{naive_wall / fast_wall:.2f} wall, x{naive_cpu / fast_cpu:.2f} CPU; "
          f"same masks -> max |difference| of the means {agree:.2e} (standardised units)")
    cores = torch.get_num_threads() if device.type == "cpu" else 1
    projected = 100_000 / (n / fast_cpu * cores) * 100 / passes
    print(f"  the paper's job, 100,000 stars x 100 passes: {projected:,.0f} s at this CPU rate on {cores} "
          f"thread(s) (paper: 300 s on a GPU)")
    bf16_wall, bf16_cpu, reduced = timed(lambda: run(True, "bfloat16"))
    sigma = torch.sqrt(fast[1] + torch.exp(fast[2]))
    worst = (reduced[0] - fast[0]).abs() / sigma
    verdict = "within" if float(worst.max()) < 0.1 else "NOT within"
    print(f"bfloat16 autocast: {rate(bf16_wall, bf16_cpu)} (x{fast_wall / bf16_wall:.2f} wall, "
          f"x{fast_cpu / bf16_cpu:.2f} CPU vs float32); max |mean_bf16 - mean_fp32| / sigma_total = "
          f"{float(worst.max()):.3f} (median {float(worst.median()):.4f}): {verdict} 0.1 sigma")


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
    parser.add_argument("--spectra", type=int, default=64, help="spectra for the inference benchmark")
    parser.add_argument("--passes", type=int, default=100, help="MC dropout passes")
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


if __name__ == "__main__":
    main()
