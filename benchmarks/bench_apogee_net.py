"""Throughput of APOGEE Net: noise-draw inference batched vs a Python loop over draws, and training.

Measured in the same run, on the device the model chooses (CUDA if present, else CPU):

1. Inference with N noise realisations per spectrum (v2 network, photometry branch on):
   - loop:    one forward per draw over the spectra (``batched=False``), the naive way;
   - batched: all ``spectra × N`` realisations through the network as one tensor
     (:func:`~labelexplorer.models.apogee_net.draw_outputs` with ``batched=True``);
   - chunked: what ``ApogeeNet.predict`` does — all draws of a chunk of spectra as one
     tensor, the chunk sized for the device (on the CPU ~16 rows, which keep the
     8575-pixel activations in cache; on a GPU thousands).
   All use the same seeded draws, so their outputs are compared too. Next to each, the
   memory of one call: the largest input + output activation pair of a layer, times the
   rows of the call (what must be live at once, weights excluded).
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

from labelexplorer.models.apogee_net import (_MAX_DRAW_ROWS, ApogeeNet, ApogeeNetNetwork, draw_outputs, draw_seeds,
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


def activation_bytes_per_row(network: torch.nn.Module, flux: torch.Tensor, metadata: torch.Tensor) -> int:
    """Largest (input + output) activation of any layer for one row, in bytes."""
    sizes = []

    def record(module, inputs, output):
        if not list(module.children()):
            sizes.append((inputs[0].numel() + output.numel()) * output.element_size() // output.shape[0])

    hooks = [m.register_forward_hook(record) for m in network.modules()]
    try:
        with torch.no_grad():
            network(flux[:1], metadata[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


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

    def run(batched: bool, chunk: int | None = None):
        chunk = chunk or n_spectra
        with torch.no_grad():
            out = torch.cat([draw_outputs(network, flux[i:i + chunk], error[i:i + chunk], metadata[i:i + chunk], draws,
                                          seeds[i:i + chunk], batched=batched) for i in range(0, n_spectra, chunk)])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    model_chunk = max(1, _MAX_DRAW_ROWS.get(device.type, 16) // draws)
    loop_time, loop_out = best_time(lambda: run(False))
    all_time, all_out = best_time(lambda: run(True))
    chunk_time, chunk_out = best_time(lambda: run(True, model_chunk))
    difference = max(float((all_out - loop_out).abs().max()), float((chunk_out - loop_out).abs().max()))
    per_row = activation_bytes_per_row(network, flux, metadata)
    print(f"inference, {n_spectra} spectra x {draws} noise draws ({n_spectra * draws} forwards), "
          f"{n_parameters(network):,} parameters")
    rows = [("loop over draws (naive)", loop_time, n_spectra),
            ("all draws, one tensor", all_time, n_spectra * draws),
            ("draws batched per chunk (predict)", chunk_time, min(model_chunk, n_spectra) * draws)]
    for name, seconds, rows_per_call in rows:
        print(f"  {name:<34}: {n_spectra / seconds:8.2f} spectra/s  ({n_spectra * draws / seconds:7.1f} "
              f"realisations/s, {rows_per_call} rows a call, {rows_per_call * per_row / 2 ** 20:.1f} MiB of "
              f"activations; x{loop_time / seconds:.2f} vs loop)")
    print(f"  largest output difference to the loop: {difference:.2e} (standardised units)")


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
