"""The fast MC-dropout path of the Bayesian CNNs equals the plain layers it replaces.

* conv2 → ReLU → MaxPool(4) as one strided block-Toeplitz convolution
  (:meth:`SpectrumTrunk.conv_relu_pool`) against ``conv1d`` + ``max_pool1d``: forward and
  gradients, in float32;
* the trunk's CPU blocks, batched vs naive passes, and reproducible masks;
* the masks equal those of the earlier implementation (``randint`` words compared in
  float arithmetic), so predictions saved before keep their values;
* bfloat16 autocast stays within 0.1 σ of float32;
* inference with shared masks (one per pass for all spectra, :class:`DropoutStreams`
  ``shared=True``): the trunk's fast path (:meth:`SpectrumTrunk._ensemble_passes`) equals
  the plain layers with the same masks, whatever its blocks; batched equals naive; the
  spectra of a pass share its masks; cached bfloat16 weights follow parameter updates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from labelexplorer.models.bcnn import BCNNNetwork, CensoredBCNNNetwork, SpectrumTrunk, mc_samples
from labelexplorer.models.nn import DropoutStreams
from labelexplorer.models.nn.layers import MCDropout, keep_mask, number_dropout_layers


def _plain_conv_relu_pool(trunk: SpectrumTrunk, h: torch.Tensor) -> torch.Tensor:
    """The layers as the paper writes them: 'same' conv (3 zeros before, 4 after), ReLU, MaxPool(4)."""
    out = torch.relu(trunk.conv2(nn.functional.pad(h, (3, 4))))
    return nn.functional.max_pool1d(out, 4).flatten(1)


def _plain_trunk(trunk: SpectrumTrunk, stem, streams, repeats):
    """The stochastic trunk in one block with the plain convolution and pooling."""
    h = trunk.drop_conv(stem, streams, repeats)
    h = trunk.drop_flat(_plain_conv_relu_pool(trunk, h), streams)
    h = trunk.drop_dense(torch.relu(trunk.dense1(h)), streams)
    return torch.relu(trunk.dense2(h))


def _trunk(n_pixels: int, seed: int = 0) -> SpectrumTrunk:
    torch.manual_seed(seed)
    trunk = SpectrumTrunk(n_pixels, 0.3)
    number_dropout_layers(trunk)  # one stream per dropout layer, as in the networks
    with torch.no_grad():  # non-zero biases, so that their place (before or after the pooling) matters
        for layer in (trunk.conv1, trunk.conv2, trunk.dense1):
            layer.bias.normal_(0.0, 0.05)
    return trunk


@pytest.mark.parametrize("n_pixels", [64, 66, 67, 7514], ids=lambda n: f"{n}px")
def test_strided_toeplitz_convolution_equals_conv_relu_maxpool(n_pixels):
    trunk = _trunk(n_pixels)
    h = torch.randn(3, 2, n_pixels, dtype=torch.float32)
    fast, plain = trunk.conv_relu_pool(h), _plain_conv_relu_pool(trunk, h)
    assert fast.shape == (3, 4 * (n_pixels // 4)) == plain.shape  # dense1's input, channel-major
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    assert float((plain > 0).float().mean()) > 0.3  # the comparison covers active units


def test_ties_of_all_zero_inputs_change_no_gradient_that_reaches_a_weight_or_the_stem():
    trunk = _trunk(128, seed=4)
    h = torch.relu(torch.randn(2, 2, 128))
    h[:, :, 30:70] = 0.0  # whole pooling groups see only zeros: their four positions tie
    h.requires_grad_(True)

    def gradients(forward):
        trunk.zero_grad()
        h.grad = None
        (forward(h) * torch.linspace(-1, 1, 128)).sum().backward()
        return h.grad.clone(), trunk.conv2.weight.grad.clone(), trunk.conv2.bias.grad.clone()

    (h_fast, w_fast, b_fast), (h_plain, w_plain, b_plain) = (
        gradients(trunk.conv_relu_pool), gradients(lambda v: _plain_conv_relu_pool(trunk, v)))
    torch.testing.assert_close(w_fast, w_plain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b_fast, b_plain, rtol=1e-5, atol=1e-7)
    nonzero = h.detach() != 0  # where a ReLU or dropout mask in front lets the gradient through
    torch.testing.assert_close(h_fast[nonzero], h_plain[nonzero], rtol=1e-5, atol=1e-7)
    assert float(b_fast.abs().min()) > 0


@pytest.mark.parametrize("n_pixels", [64, 67, 7514], ids=lambda n: f"{n}px")
def test_gradients_of_the_fast_trunk_equal_the_plain_layers(n_pixels):
    """Training and the sensitivity maps differentiate the same function (zeros and ties included)."""
    trunk = _trunk(n_pixels, seed=1)
    x = (0.1 * torch.randn(4, n_pixels)).requires_grad_(True)

    def gradients(forward):
        trunk.zero_grad()
        x.grad = None
        out = forward(trunk.stem(x), DropoutStreams(5), 3)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in trunk.parameters()]

    fast, plain = gradients(trunk.forward), gradients(lambda *a: _plain_trunk(trunk, *a))
    names = ["x"] + [name for name, _ in trunk.named_parameters()]
    for name, g_fast, g_plain in zip(names, fast, plain):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-7, msg=name)
    assert float(fast[names.index("conv2.weight")].abs().max()) > 0  # conv2 is trained through the Toeplitz weight


def test_trunk_blocks_on_the_cpu_do_not_change_the_draws(monkeypatch):
    trunk = _trunk(7514, seed=2)
    stem = trunk.stem(0.1 * torch.randn(3, 7514))
    with torch.no_grad():
        whole = _plain_trunk(trunk, stem, DropoutStreams(9), 7)
        monkeypatch.setattr(SpectrumTrunk, "cpu_block_rows", 7)  # 2 passes (6 rows) per block, the last one alone
        blocked = trunk(stem, DropoutStreams(9), repeats=7)
    assert blocked.shape == (21, 64)
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(blocked[:3], blocked[3:6])  # passes differ


def _censored_network(n_pixels=256):
    windows = torch.zeros(3, n_pixels, dtype=torch.bool)
    windows[0, 10:40], windows[1, 100:140], windows[2, 200:250] = True, True, True
    torch.manual_seed(3)
    return CensoredBCNNNetwork(n_pixels, [0, 1, 2], [3, 4, 5], windows, [(32, 16), (256, 64), (32, 16)],
                               0.3, 2, 0.5).eval()


@pytest.mark.parametrize("block_rows", [4, 64, 10_000], ids=lambda r: f"block{r}")
def test_batched_passes_equal_naive_full_forwards(monkeypatch, block_rows):
    monkeypatch.setattr(SpectrumTrunk, "cpu_block_rows", block_rows)
    network = _censored_network()
    x = 0.1 * torch.randn(5, 256)
    with torch.no_grad():
        fast = mc_samples(network, x, 12, DropoutStreams(4), rows=30)
        naive = mc_samples(network, x, 12, DropoutStreams(4), batched=False)
        again = mc_samples(network, x, 12, DropoutStreams(4))
        other = mc_samples(network, x, 12, DropoutStreams(5))
    for got, want in zip(fast + again, naive + naive):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float(fast[0].std(0).min()) > 0  # the passes differ ...
    assert not torch.allclose(fast[0], other[0])  # ... and with the seed


def _randint_keep_mask(shape, rate, generator, blocks=1):
    """The earlier implementation: randint words, 16-bit values compared in float arithmetic."""
    dropped = round(rate * 65536)
    n = int(np.prod(shape)) // blocks
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, (blocks, (n + 3) // 4), dtype=torch.int64, generator=generator)
    values = words.view(torch.int16)[:, :n].to(torch.float32)
    return values.sub_(dropped - 32768 - 1).clamp_(0.0, 1.0).view(shape)


@pytest.mark.parametrize("shape, blocks", [((10_000,), 1), ((3, 5, 7), 3), ((4, 2, 7514), 4)],
                         ids=["flat", "odd-sized-blocks", "conv-layer"])
def test_masks_are_those_of_the_earlier_implementation(shape, blocks):
    keep, kept = keep_mask(shape, 0.3, torch.Generator().manual_seed(11), "cpu", blocks=blocks)
    reference = _randint_keep_mask(shape, 0.3, torch.Generator().manual_seed(11), blocks)
    assert keep.dtype == torch.float32 and torch.equal(keep, reference)
    assert kept == pytest.approx(1 - round(0.3 * 65536) / 65536)
    assert abs(float(keep.mean()) - kept) < 0.03


def test_mc_dropout_output_is_scaled_input_times_the_mask():
    layer = MCDropout(0.3)
    x = torch.randn(6, 50)
    out = layer(x, DropoutStreams(2), repeats=3)
    keep = _randint_keep_mask((3, 6, 50), 0.3, DropoutStreams(2).generator(0), blocks=3)
    kept = 1 - round(0.3 * 65536) / 65536
    assert torch.equal(out, ((x * (1 / kept)) * keep).reshape(18, 50))
    # with autograd (sensitivity maps) the same values, and the gradient is the scaled mask
    x.requires_grad_(True)
    out = layer(x, DropoutStreams(2), repeats=3)
    out.sum().backward()
    torch.testing.assert_close(x.grad, keep.sum(0) / kept)


def test_bfloat16_autocast_stays_within_a_tenth_of_sigma():
    network = BCNNNetwork(512, 4, 0.3).eval()
    x = 0.1 * torch.randn(6, 512)
    with torch.no_grad():
        value, log_var = mc_samples(network, x, 64, DropoutStreams(1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value_bf16, _ = mc_samples(network, x, 64, DropoutStreams(1))
    assert value_bf16.dtype == torch.bfloat16
    sigma = torch.sqrt(value.var(0) + log_var.exp().mean(0))
    worst = float(((value_bf16.float().mean(0) - value.mean(0)).abs() / sigma).max())
    assert 0 < worst < 0.1


def _shared_reference(trunk: SpectrumTrunk, stem, seed: int, repeats: int) -> torch.Tensor:
    """The plain layers with one mask per pass, drawn as the dropout layers draw them, applied by hand."""
    streams = DropoutStreams(seed)  # generators of the same seeds as the shared streams
    b = len(stem)
    masks = [layer.pass_masks(repeats, shape, streams)
             for layer, shape in ((trunk.drop_conv, stem.shape[1:]), (trunk.drop_flat, (trunk.dense1.in_features,)),
                                  (trunk.drop_dense, (trunk.dense1.out_features,)))]

    def drop(h, index):
        keep, kept = masks[index]
        return ((h.view(repeats, b, *h.shape[1:]) * (1 / kept)) * keep.unsqueeze(1)).flatten(0, 1)

    h = drop(stem.repeat(repeats, 1, 1), 0)
    h = drop(_plain_conv_relu_pool(trunk, h), 1)
    h = drop(torch.relu(trunk.dense1(h)), 2)
    return torch.relu(trunk.dense2(h))


@pytest.mark.parametrize("n_pixels, block_rows, conv_rows", [(64, 256, 16), (67, 7, 5), (7514, 256, 16), (7514, 9, 40)],
                         ids=["64px", "67px-odd-blocks", "7514px", "7514px-conv-over-passes"])
def test_fast_inference_path_equals_the_plain_layers_with_shared_masks(monkeypatch, n_pixels, block_rows, conv_rows):
    monkeypatch.setattr(SpectrumTrunk, "cpu_ensemble_block_rows", block_rows)
    monkeypatch.setattr(SpectrumTrunk, "cpu_conv_rows", conv_rows)
    trunk = _trunk(n_pixels, seed=6)
    stem = trunk.stem(0.1 * torch.randn(4, n_pixels)).detach()
    with torch.no_grad():
        reference = _shared_reference(trunk, stem, 3, 5)
        fast = trunk(stem, DropoutStreams(3, shared=True), repeats=5)
    with torch.enable_grad():  # autograd takes the general path (MCDropout, strided Toeplitz convolution)
        general = trunk(stem, DropoutStreams(3, shared=True), repeats=5).detach()
    assert fast.shape == (20, 64) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(general, reference, rtol=1e-5, atol=1e-6)
    assert float((reference > 0).float().mean()) > 0.2  # active units are compared
    assert not torch.allclose(fast[:4], fast[4:8])  # passes differ


def test_shared_masks_are_the_same_for_every_spectrum_of_a_pass():
    layer = MCDropout(0.3)
    x = torch.ones(4, 500)
    out = layer(x, DropoutStreams(1, shared=True), repeats=3).view(3, 4, 500)
    assert torch.equal(out[:, 0], out[:, 3]) and not torch.equal(out[0], out[1])
    again = layer(out.view(12, 500), DropoutStreams(2, shared=True), passes=3).view(3, 4, 500)
    assert torch.equal(again[:, 0], again[:, 2])
    assert abs(float((out[:, 0] == 0).float().mean()) - 0.3) < 0.05
    # a spectrum's draws do not depend on the spectra it runs with
    network = _censored_network()
    x = 0.1 * torch.randn(6, 256)
    with torch.no_grad():
        together = mc_samples(network, x, 8, DropoutStreams(4, shared=True))[0]
        alone = mc_samples(network, x[4:5], 8, DropoutStreams(4, shared=True))[0]
    torch.testing.assert_close(alone[:, 0], together[:, 4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("counter_based", [False, True], ids=["torch-generator", "counter-based"])
@pytest.mark.parametrize("block_rows", [5, 10_000], ids=lambda r: f"block{r}")
def test_shared_masks_batched_equal_naive_full_forwards(monkeypatch, block_rows, counter_based):
    monkeypatch.setattr(SpectrumTrunk, "cpu_ensemble_block_rows", block_rows)
    network = _censored_network()
    x = 0.1 * torch.randn(5, 256)

    def streams():  # counter-based: what a GPU draws from
        return DropoutStreams(2, shared=True, counter_based=counter_based)

    with torch.no_grad():
        fast = mc_samples(network, x, 9, streams(), rows=20)
        naive = mc_samples(network, x, 9, streams(), batched=False)
    with torch.enable_grad():
        general = [t.detach() for t in mc_samples(network, x, 9, streams())]
    for got, want in zip(list(fast) + general, list(naive) * 2):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float(fast[0].std(0).min()) > 0


def test_fast_path_in_bfloat16_stays_within_a_tenth_of_sigma_and_follows_weight_updates():
    network = BCNNNetwork(7514, 4, 0.3).eval()
    x = 0.1 * torch.randn(6, 7514)
    with torch.no_grad():
        value, log_var = mc_samples(network, x, 32, DropoutStreams(1, shared=True))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced, _ = mc_samples(network, x, 32, DropoutStreams(1, shared=True))
        sigma = torch.sqrt(value.var(0) + log_var.exp().mean(0))
        worst = float(((reduced.float().mean(0) - value.mean(0)).abs() / sigma).max())
        assert reduced.dtype == torch.bfloat16 and 0 < worst < 0.1
        network.trunk.dense1.weight.mul_(2.0)  # the weights cast once must follow an in-place update
        with torch.autocast("cpu", dtype=torch.bfloat16):
            updated, _ = mc_samples(network, x, 32, DropoutStreams(1, shared=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # with autograd: the general path, no cached weights
        expected = mc_samples(network, x, 32, DropoutStreams(1, shared=True))[0].detach().float()
    error, change = (updated.float() - expected).abs().max(), (reduced.float() - expected).abs().max()
    assert float(error) < 0.1 * float(change)  # bfloat16 rounding, against the effect of the update
