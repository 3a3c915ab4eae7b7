"""Throughput of APOGEE Net: noise-draw inference batched vs a Python loop over draws, and training.

Measured in the same run, on the device the model chooses (CUDA if present, else CPU):

1. Inference with N noise realisations per spectrum (v2 network, photometry branch on):
   - batched: all ``spectra × N`` realisations through the network as one tensor
     (:func:`~labelexplorer.models.apogee_net.draw_outputs` with ``batched=True``, what
     ``ApogeeNet.predict`` does);
   - loop:    one forward per draw over the spectra (``batched=False``), the naive way.
   Both use the same seeded draws, so their outputs are compared too.
2. The whole ``ApogeeNet.predict`` (error clipping, draws, medians, flags) in spectra/s.
3. Training throughput (spectra per second, forward + backward + Adam) of v1 and v2.

Usage::

    python benchmarks/bench_apogee_net.py [--spectra 16] [--draws 20] [--train-spectra 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from labelexplorer.models.apogee_net import (ApogeeNet, ApogeeNetNetwork, draw_outputs, draw_seeds,
                                             initialise_network)
from labelexplorer.models.nn import choose_device, n_parameters
from labelexplorer.models.nn.device import flush_denormals
from labelexplorer.preprocess.grid import apogee_wavelength
from labelexplorer.spectra import Spectra

GRID = apogee_wavelength()


def toy_flux(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """apStar-like raw flux (levels 50–1000) with lines, and its errors."""
    rng = np.random.default_rng(seed)
    level = 10 ** rng.uniform(1.7, 3.0, n)
    lines = 1 - 0.3 * np.sin(np.linspace(0, 400, GRID.size)) ** 8
    flux = level[:, None] * lines[None, :] * (1 + 0.01 * rng.normal(size=(n, GRID.size)))
    return flux.astype(np.float32), (0.01 * flux + 0.5).astype(np.float32)


def best_time(function, repeat: int = 2) -> tuple[float, object]:
    """Best wall time of *repeat* calls after one warm-up call, and the last result."""
    result = function()
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def inference(n_spectra: int, draws: int, device: torch.device) -> None:
    torch.manual_seed(0)
    network = ApogeeNetNetwork(use_metadata=True)
    initialise_network(network, 300.0)
    network = network.to(device).eval()
    flux, error = (torch.as_tensor(a, device=device) for a in toy_flux(n_spectra))
    metadata = torch.randn(n_spectra, 7, device=device)
    seeds = draw_seeds([f"s{i}" for i in range(n_spectra)], 0)

    def run(batched: bool):
        with torch.no_grad():
            out = draw_outputs(network, flux, error, metadata, draws, seeds, batched=batched)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    loop_time, loop_out = best_time(lambda: run(False))
    batch_time, batch_out = best_time(lambda: run(True))
    difference = float((batch_out - loop_out).abs().max())
    print(f"inference, {n_spectra} spectra x {draws} noise draws ({n_spectra * draws} forwards), "
          f"{n_parameters(network):,} parameters")
    print(f"  loop over draws : {n_spectra / loop_time:8.2f} spectra/s  ({n_spectra * draws / loop_time:7.1f} "
          "realisations/s)")
    print(f"  batched (1 call): {n_spectra / batch_time:8.2f} spectra/s  ({n_spectra * draws / batch_time:7.1f} "
          "realisations/s)")
    print(f"  speed-up batched/loop: {loop_time / batch_time:.2f}x; largest output difference {difference:.2e} "
          "(standardised units)")


def whole_predict(n_spectra: int, draws: int, device: torch.device) -> None:
    flux, error = toy_flux(n_spectra, seed=1)
    spectra = Spectra(flux, GRID, error=error, ids=[f"p{i}" for i in range(n_spectra)],
                      info={"J": np.full(n_spectra, 11.0), "H": np.full(n_spectra, 10.5),
                            "K": np.full(n_spectra, 10.4)})
    torch.manual_seed(1)
    network = ApogeeNetNetwork(use_metadata=True)
    initialise_network(network, 300.0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        torch.save(network.state_dict(), path)
        model = ApogeeNet.from_published(path, n_draws=draws, device=str(device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seconds, _ = best_time(lambda: model.predict(spectra), repeat=1)
    print(f"ApogeeNet.predict ({draws} draws, medians, stds, flags): {n_spectra / seconds:.2f} spectra/s")


def training(n_spectra: int, device: torch.device, batch_size: int) -> None:
    flux, _ = toy_flux(n_spectra, seed=2)
    x = torch.as_tensor(flux, device=device)
    y = torch.randn(n_spectra, 3, device=device)
    m = torch.randn(n_spectra, 7, device=device)
    for version, use_metadata in ((1, False), (2, True)):
        torch.manual_seed(2)
        network = ApogeeNetNetwork(use_metadata, dropout=0.1)
        initialise_network(network, float(np.median(flux)))
        network = network.to(device).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)

        def epoch():
            for start in range(0, n_spectra, batch_size):
                rows = slice(start, start + batch_size)
                optimizer.zero_grad(set_to_none=True)
                loss = ((network(x[rows], m[rows] if use_metadata else None) - y[rows]) ** 2).mean()
                loss.backward()
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        with flush_denormals():
            seconds, _ = best_time(epoch, repeat=1)
        print(f"training v{version} (batch {batch_size}, forward + backward + Adam): "
              f"{n_spectra / seconds:.1f} spectra/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=16)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--train-spectra", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    inference(args.spectra, args.draws, device)
    whole_predict(args.spectra, args.draws, device)
    training(args.train_spectra, device, args.batch_size)


if __name__ == "__main__":
    main()
