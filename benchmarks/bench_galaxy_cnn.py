"""Throughput of the galaxy CNN on this machine: training and inference images/s.

For each network (the ResNet-18 of reduced width used by ``eval_galaxy_mock.py`` and the
paper's ResNet-34 at 128 px) and each execution mode — float32 with contiguous tensors
(the plain way), channels-last, bfloat16 autocast of the trunk, both — it measures in
the same run:

* training: one epoch of ``GalaxyCNN.fit`` (AdamW steps with augmentation; no validation
  split, no test-time augmentation or MC dropout in the reference-uncertainty step);
* inference: ``predict`` without TTA or MC dropout, and the full default prediction
  (8 dihedral transforms × MC dropout passes of the head);
* Monte Carlo dropout done by repeating only the head (what the model does) against the
  naive way, full forward passes of the whole network per MC pass;

and prints images/s with ratios to the plain way (best of several rounds that go through
all modes in turn, since the machine may be shared), plus how far bfloat16 moves the
predictions (in units of the label's standard deviation).

Usage::

    python benchmarks/bench_galaxy_cnn.py [--images 512] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import labelexplorer as le
from labelexplorer.models import get_model
from labelexplorer.models.nn.device import configure_threads
from labelexplorer.models.nn.layers import DropoutStreams

MODES = {"float32": dict(channels_last=False, precision="float32"),
         "channels-last": dict(channels_last=True, precision="float32"),
         "bfloat16": dict(channels_last=False, precision="bfloat16"),
         "channels-last + bfloat16": dict(channels_last=True, precision="bfloat16")}


def _images(n: int, size: int, seed: int = 0):
    """Galaxy-like blobs (brightness sets the label) — throughput does not depend on content."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.2, 0.9, n)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (0.02 * size ** 2))
    pixels = brightness[:, None, None, None] * blob * np.array([1.0, 0.8, 0.6])[None, :, None, None]
    pixels = np.clip(pixels + rng.normal(0, 0.02, pixels.shape), 0, 1).astype(np.float32)
    return le.ImageSet(pixels), {"OH_P50": 8.5 + 0.5 * brightness}


def _timed(function, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_network(name: str, params: dict, n_train: int, n_predict: int, mc_passes: int, rounds: int) -> None:
    images, labels = _images(n_train, params["image_size"])
    test = images[:n_predict]
    print(f"\n== {name}: ResNet-{params['depth']} width {params['width']}, {params['image_size']} px, "
          f"{n_train} training images, {n_predict} to predict, {mc_passes} MC passes, best of {rounds} rounds ==")
    models = {}
    for mode, options in MODES.items():
        model = get_model("galaxy-cnn", **params, **options, epochs=1, validation_fraction=0.0, tta=False,
                          mc_passes=0, progress=False)
        warm_up = images[:2 * params["batch_size"]]  # first calls pay for kernel selection and allocation
        model.fit(warm_up, {key: value[:len(warm_up)] for key, value in labels.items()})
        models[mode] = model
    # rounds go through every mode in turn, so a change in the load of a shared machine hits all modes alike
    best = {mode: [float("inf")] * 3 for mode in MODES}
    for _ in range(rounds):
        for mode, model in models.items():
            model.set_params(tta=False, mc_passes=0)
            times = [_timed(lambda: model.fit(images, labels)), _timed(lambda: model.predict(test))]
            model.set_params(tta=True, mc_passes=mc_passes)
            times.append(_timed(lambda: model.predict(test)))
            best[mode] = [min(a, b) for a, b in zip(best[mode], times)]
    print(f"{'mode':26s} {'train img/s':>12s} {'ratio':>6s} {'infer img/s':>12s} {'ratio':>6s} "
          f"{'TTAxMC img/s':>13s} {'ratio':>6s}")
    baseline = None
    for mode, (fit_time, plain, full) in best.items():
        rates = (n_train / fit_time, n_predict / plain, n_predict / full)
        baseline = baseline or rates
        print(f"{mode:26s} {rates[0]:12.1f} {rates[0] / baseline[0]:6.2f} {rates[1]:12.1f} "
              f"{rates[1] / baseline[1]:6.2f} {rates[2]:13.1f} {rates[2] / baseline[2]:6.2f}")
    model = models["float32"]
    model.set_params(tta=False, mc_passes=0)
    mean = model.predict(test).mean
    model.set_params(precision="bfloat16")
    shift = np.abs(model.predict(test).mean - mean).max() / model.label_std_[0]
    print(f"bfloat16 trunk vs float32, same weights: max |Δ prediction| = {shift:.4f} σ(label)")
    _bench_mc(model, test, mc_passes)


def _bench_mc(model, test, passes: int) -> None:
    """MC dropout by repeating the head only (the model's way) vs full forwards per pass (naive)."""
    model.set_params(precision="float32", channels_last=False)
    network = model.network_.eval()
    x = torch.as_tensor(model.prepare_images(test))

    def head_only():
        with torch.no_grad():
            network.head(network.trunk(x), DropoutStreams(0), repeats=passes)

    def naive():
        streams = DropoutStreams(0)
        with torch.no_grad():
            for _ in range(passes):
                network(x, streams)

    fast, slow = _timed(head_only, 2), _timed(naive, 1)
    print(f"MC dropout, {passes} passes: head repeated {len(x) / fast:.1f} img/s, "
          f"naive full forwards {len(x) / slow:.1f} img/s, speed-up x{slow / fast:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="training images for the small network")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (the best of them is kept)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of the script)")
    args = parser.parse_args(argv)
    threads = configure_threads()
    print(f"torch {torch.__version__}, {threads} CPU thread(s), "
          f"bf16 support: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    if args.quick:
        bench_network("quick", dict(depth=10, width=8, hidden=32, image_size=16, batch_size=16), 64, 32, 4, 1)
        return 0
    bench_network("eval_galaxy_mock network", dict(depth=18, width=16, hidden=512, image_size=64, batch_size=64),
                  args.images, 256, 16, args.rounds)
    bench_network("paper network", dict(depth=34, width=64, hidden=512, image_size=128, batch_size=16),
                  max(args.images // 16, 32), 32, 16, max(1, args.rounds - 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
