"""The torch building blocks: robust loss, MC dropout, StopGrad, max-norm, the training loop, devices."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from labelexplorer.exceptions import LabelExplorerError, ModelFileError
from labelexplorer.models.nn import (DropoutStreams, MCDropout, StopGrad, TrainingSettings, apply_max_norm,
                                     choose_device, dropout_disabled, per_label_loss, resolve_precision,
                                     robust_censored_loss, run_in_chunks, stopgrad_passthrough, train)
from labelexplorer.models.nn.device import busy_cores
from labelexplorer.models.nn.training import load_optimizer_tensors, optimizer_tensors
from labelexplorer.models.nn.layers import CounterStream, keep_mask

NAN = float("nan")


# ----------------------------------------------------------------------------- loss
def test_loss_matches_hand_computed_values():
    target = torch.tensor([[1.0, 2.0]])
    value = torch.tensor([[0.5, 1.0]])
    log_var = torch.tensor([[0.0, math.log(4.0)]])
    # ½·0.5²/1 + ½·ln 1 = 0.125 ;  ½·1²/4 + ½·ln 4 = 0.125 + 0.693147
    expected = [0.125, 0.125 + 0.5 * math.log(4.0)]
    np.testing.assert_allclose(per_label_loss(target, value, log_var)[0].tolist(), expected, rtol=1e-6)
    assert float(robust_censored_loss(target, value, log_var)) == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_known_label_error_adds_to_the_variance():
    target, value, log_var = torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]])
    # sigma² = exp(s) + sigma_known² = 4 + 1
    loss = per_label_loss(target, value, log_var, known_error=torch.tensor([[1.0]]))
    assert float(loss) == pytest.approx(0.5 / 5.0 + 0.5 * math.log(5.0), rel=1e-6)


def test_missing_labels_add_nothing_and_the_rest_is_scaled_by_d_over_d_valid():
    value = torch.zeros(1, 4, requires_grad=True)
    target = torch.tensor([[1.0, NAN, NAN, NAN]])
    loss = robust_censored_loss(target, value, torch.zeros(1, 4))
    # one known entry with loss 0.5: mean over D=4 labels times D/D_valid = 4 gives 0.5, not 0.125
    assert float(loss.detach()) == pytest.approx(0.5)
    loss.backward()
    assert value.grad[0, 1:].abs().max() == 0.0
    assert float(value.grad[0, 0]) == pytest.approx(-1.0)


def test_a_row_without_any_label_contributes_zero_and_no_nan():
    value = torch.zeros(2, 3, requires_grad=True)
    log_var = torch.zeros(2, 3, requires_grad=True)
    target = torch.tensor([[NAN, NAN, NAN], [1.0, 1.0, 1.0]])
    loss = robust_censored_loss(target, value, log_var)
    assert float(loss.detach()) == pytest.approx(0.5 / 2)  # the full row's 0.5, averaged over 2 rows
    loss.backward()
    assert torch.isfinite(value.grad).all() and torch.isfinite(log_var.grad).all()
    assert value.grad[0].abs().max() == 0.0 and log_var.grad[0].abs().max() == 0.0
    all_missing = robust_censored_loss(torch.full((2, 3), NAN), torch.zeros(2, 3), torch.zeros(2, 3))
    assert float(all_missing) == 0.0


# ----------------------------------------------------------------------------- layers
def test_mc_dropout_stays_on_in_eval_mode_and_scales_kept_units():
    layer = MCDropout(0.3).eval()
    x = torch.ones(2000, 50)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    dropped = float((first == 0).float().mean())
    assert dropped == pytest.approx(0.3, abs=0.01)
    np.testing.assert_allclose(first[first != 0].unique().numpy(), [1 / 0.7], rtol=1e-6)


def test_seeded_streams_reproduce_masks_and_repeats_equal_sequential_passes():
    layer = MCDropout(0.3)
    x = torch.randn(5, 40)
    batched = layer(x, DropoutStreams(7), repeats=4)
    streams = DropoutStreams(7)
    sequential = torch.cat([layer(x, streams) for _ in range(4)])
    assert torch.equal(batched, sequential)
    assert torch.equal(batched, layer(x, DropoutStreams(7), repeats=4))
    assert not torch.equal(batched, layer(x, DropoutStreams(8), repeats=4))
    with dropout_disabled(layer):
        assert torch.equal(layer(x, DropoutStreams(7)), x)


def test_stopgrad_blocks_in_training_and_passes_for_analysis():
    x = torch.tensor([2.0], requires_grad=True)
    stop = StopGrad()
    (stop(x) * 3).sum().backward()
    assert float(x.grad) == 0.0
    x.grad = None
    with stopgrad_passthrough(stop):
        (stop(x) * 3).sum().backward()
    assert float(x.grad) == 3.0
    assert stop.blocking  # restored afterwards


def test_max_norm_holds_after_an_optimizer_step():
    torch.manual_seed(0)
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight[1] = 0.01  # a small row must stay untouched
    small_row = layer.weight[1].detach().clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    loss = -layer(torch.ones(8, 64))[:, 0].sum()
    loss.backward()
    optimizer.step()
    assert float(layer.weight[0].detach().norm()) > 0.5
    apply_max_norm(layer, 0.5)
    assert float(layer.weight[0].detach().norm()) == pytest.approx(0.5, rel=1e-5)
    assert torch.equal(layer.weight[1], small_row)


# ----------------------------------------------------------------------------- training loop
class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(3, 16)
        self.drop = MCDropout(0.2)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.hidden(x))))


def _tiny_problem(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.05 * torch.as_tensor(rng.normal(size=(n, 1)), dtype=torch.float32)
    return {"x": x, "y": y}


def _mse(module, batch):
    return ((module(batch["x"]) - batch["y"]) ** 2).mean()


def _settings(**changes):
    base = dict(epochs=6, batch_size=16, learning_rate=0.02, progress=False, seed=3)
    base.update(changes)
    return TrainingSettings(**base)


def _fresh_net():
    torch.manual_seed(11)
    return _TinyNet()


def test_training_learns_and_records_history():
    net = _fresh_net()
    data = _tiny_problem()
    with torch.no_grad():
        before = float(_mse(net, data))
    result = train(net, _mse, data, _settings(epochs=15), device=torch.device("cpu"))
    val = [r["val_loss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert min(val) < 0.2 * before
    assert np.isfinite([r["loss"] for r in result.history]).all()


def test_plateau_halves_the_learning_rate_and_early_stopping_ends_the_run():
    net = _fresh_net()
    constant = lambda module, batch: (module(batch["x"]) * 0).sum() + 1.0  # noqa: E731 - never improves
    result = train(net, constant, _tiny_problem(), _settings(epochs=30, learning_rate=0.1),
                   device=torch.device("cpu"))
    # epoch 1 sets the best; no improvement after: lr halves after epochs 3 and 5, training stops after 5
    assert [r["lr"] for r in result.history] == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert result.stopped_early and result.best_epoch == 1


def test_min_epochs_holds_early_stopping_back():
    net = _fresh_net()
    constant = lambda module, batch: (module(batch["x"]) * 0).sum() + 1.0  # noqa: E731 - never improves
    result = train(net, constant, _tiny_problem(), _settings(epochs=30, learning_rate=0.1, min_epochs=9),
                   device=torch.device("cpu"))
    # monitoring starts at epoch 9, which becomes the best; 4 epochs without improvement end it
    assert len(result.history) == 13 and result.stopped_early and result.best_epoch == 9


def test_warmup_epochs_tell_the_loss_and_set_no_best_epoch_nor_plateau():
    seen = []

    def warm_then_constant(module, batch):  # the warm-up loss is lower: it must not become the best
        seen.append((module.training, batch["warmup"]))
        return (module(batch["x"]) * 0).sum() + (0.0 if batch["warmup"] else 1.0)

    result = train(_fresh_net(), warm_then_constant, _tiny_problem(), _settings(epochs=30, learning_rate=0.1,
                   warmup_epochs=5), device=torch.device("cpu"))
    steps_per_epoch, validation_batches = 6, 1
    per_epoch = steps_per_epoch + validation_batches
    assert [flag for _, flag in seen[:5 * per_epoch]] == [True] * (5 * per_epoch)
    assert not any(flag for _, flag in seen[5 * per_epoch:])
    # epoch 6 is the first watched one and the best; lr halves after 8 and 10; 4 epochs without gain stop at 10
    assert [r["lr"] for r in result.history] == [0.1] * 8 + [0.05] * 2
    assert result.best_epoch == 6 and result.stopped_early


def test_resuming_inside_the_warmup_stays_in_it(tmp_path):
    flags = []

    def loss(module, batch):
        if module.training:
            flags.append(batch["warmup"])
        return _mse(module, batch)

    settings = _settings(checkpoint_dir=tmp_path, warmup_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh_net(), loss, _tiny_problem(), settings, device=torch.device("cpu"), callbacks=[_Interrupt(1)])
    flags.clear()
    train(_fresh_net(), loss, _tiny_problem(), settings, device=torch.device("cpu"))
    assert flags == [True] * 6 + [False] * 24  # epoch 2 of 6 warms up, epochs 3-6 do not


def test_best_weights_are_restored_at_the_end():
    net = _fresh_net()
    calls = {"n": 0}

    def worsening(module, batch):  # validation loss grows with every evaluation after the first epoch
        calls["n"] += 1
        return _mse(module, batch) + (0.0 if module.training else calls["n"])

    result = train(net, worsening, _tiny_problem(), _settings(epochs=8), device=torch.device("cpu"))
    assert result.best_epoch == 1
    reference = _fresh_net()
    train(reference, worsening, _tiny_problem(), _settings(epochs=1), device=torch.device("cpu"))
    torch.testing.assert_close(net.state_dict(), reference.state_dict())


class _Interrupt:
    """Raise KeyboardInterrupt at the n-th call (a training step or an epoch end)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["after-epoch-1", "mid-epoch"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, where):
    data = _tiny_problem()
    reference = _fresh_net()
    train(reference, _mse, data, _settings(), device=torch.device("cpu"))

    net = _fresh_net()
    settings = _settings(checkpoint_dir=tmp_path)
    if where == "after-epoch-1":
        with pytest.raises(KeyboardInterrupt):
            train(net, _mse, data, settings, device=torch.device("cpu"), callbacks=[_Interrupt(1)])
        assert json.loads((tmp_path / "latest" / "state.json").read_text())["loop"]["epoch"] == 1
    else:
        interrupt = _Interrupt(9)  # 6 steps per epoch: the 9th is the 3rd step of epoch 2
        loss = lambda module, batch: (interrupt() if module.training else None) or _mse(module, batch)  # noqa: E731
        with pytest.raises(KeyboardInterrupt):
            train(net, loss, data, settings, device=torch.device("cpu"))
        loop = json.loads((tmp_path / "latest" / "state.json").read_text())["loop"]
        assert (loop["epoch"], loop["step"]) == (1, 2)
    assert {p.suffix for p in (tmp_path / "latest").iterdir()} == {".json", ".safetensors"}

    resumed = _fresh_net()  # a new process would start from fresh weights
    result = train(resumed, _mse, data, settings, device=torch.device("cpu"))
    assert result.resumed_from == 1 and len(result.history) == 6
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict(), rtol=1e-6, atol=1e-7)


def test_a_checkpoint_of_other_data_is_refused(tmp_path):
    train(_fresh_net(), _mse, _tiny_problem(), _settings(epochs=1, checkpoint_dir=tmp_path),
          device=torch.device("cpu"), fingerprint="run-a")
    with pytest.raises(LabelExplorerError, match="different training run"):
        train(_fresh_net(), _mse, _tiny_problem(), _settings(epochs=1, checkpoint_dir=tmp_path),
              device=torch.device("cpu"), fingerprint="run-b")


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    train(_fresh_net(), _mse, _tiny_problem(), _settings(epochs=1, checkpoint_dir=tmp_path),
          device=torch.device("cpu"))
    (tmp_path / "latest" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="unreadable training checkpoint"):
        train(_fresh_net(), _mse, _tiny_problem(), _settings(epochs=2, checkpoint_dir=tmp_path),
              device=torch.device("cpu"))


def test_optimizer_state_round_trips_without_pickle():
    net = _fresh_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    _mse(net, _tiny_problem()).backward()
    optimizer.step()
    tensors, settings = optimizer_tensors(optimizer)
    json.dumps(settings)  # everything that is not a tensor is plain JSON
    copy = torch.optim.Adam(net.parameters(), lr=0.5)
    load_optimizer_tensors(copy, tensors, json.loads(json.dumps(settings)))
    assert copy.param_groups[0]["lr"] == 0.01
    torch.testing.assert_close(copy.state_dict()["state"], optimizer.state_dict()["state"])


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("name, match", [("nonsense", "not a device"), ("cuda", "CUDA is not available")],
                         ids=["unknown-device", "cuda-missing"])
def test_bad_device_requests_are_explained(name, match):
    if name == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(LabelExplorerError, match=match):
        choose_device(name)


def test_busy_cores_counts_the_other_running_threads_not_the_last_minute(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.95 1.20 0.80 1/345 6789\n")  # a busy last minute, nothing else running now
    assert busy_cores(samples=3, interval=0.0, loadavg=loadavg) == 0.0
    loadavg.write_text("0.10 0.20 0.30 3/345 6789\n")  # two other threads running
    assert busy_cores(samples=3, interval=0.0, loadavg=loadavg) == 2.0
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5))  # no /proc: the load average
    assert busy_cores(loadavg=tmp_path / "absent") == 1.5


def test_unknown_precision_is_refused():
    with pytest.raises(LabelExplorerError, match="precision"):
        resolve_precision("float8", torch.device("cpu"))


def test_chunks_are_halved_when_memory_runs_out():
    sizes = []

    def work(rows):
        if rows.stop - rows.start > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        sizes.append(rows.stop - rows.start)
        return rows.start

    assert run_in_chunks(work, 10, 8) == [0, 2, 4, 6, 8]
    assert sizes == [2, 2, 2, 2, 2]
    with pytest.raises(RuntimeError, match="other"):
        run_in_chunks(lambda rows: (_ for _ in ()).throw(RuntimeError("other")), 4, 2)


def test_keep_masks_of_all_passes_at_once_equal_one_call_per_pass():
    together, kept = keep_mask((3, 5, 7), 0.3, torch.Generator().manual_seed(4), "cpu", blocks=3)
    generator = torch.Generator().manual_seed(4)
    separate = torch.stack([keep_mask((5, 7), 0.3, generator, "cpu")[0] for _ in range(3)])
    torch.testing.assert_close(together, separate)
    assert kept == pytest.approx(0.7, abs=1e-5)
    many, _ = keep_mask((200_000,), 0.3, torch.Generator().manual_seed(5), "cpu")
    assert float(many.mean()) == pytest.approx(0.7, abs=0.005)


def _splitmix64(key: int, n: int) -> np.ndarray:
    """The first *n* outputs of SplitMix64 seeded with *key*, in numpy's wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def test_counter_stream_is_splitmix64_whatever_the_blocks():
    assert int(_splitmix64(0, 1)[0]) == 0xE220A8397B1DCDAF  # the published first output for seed 0
    stream = CounterStream(2 ** 62 + 12345)
    words = torch.cat([stream.words(2, 6, "cpu"), stream.words(1, 6, "cpu")]).numpy().view(np.uint64)
    np.testing.assert_array_equal(words.ravel(), _splitmix64(2 ** 62 + 12345, 18))
    together, kept = keep_mask((3, 5, 7), 0.3, CounterStream(4), "cpu", blocks=3)
    stream = CounterStream(4)
    separate = torch.stack([keep_mask((5, 7), 0.3, stream, "cpu")[0] for _ in range(3)])
    torch.testing.assert_close(together, separate)
    many, _ = keep_mask((200_000,), 0.3, CounterStream(5), "cpu")
    assert float(many.mean()) == pytest.approx(kept, abs=0.005)
    assert isinstance(DropoutStreams(0, "cuda").generator(0), CounterStream)
    assert isinstance(DropoutStreams(0, "cpu").generator(0), torch.Generator)


def test_the_mean_network_of_one_thread_leaves_dropout_on_in_another():
    import threading

    layer = MCDropout(0.5)
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def mean_network():
        with dropout_disabled(layer):
            seen["inside"] = bool((layer(torch.ones(1000)) == 1).all())
            inside.set()
            done.wait(10)
        seen["after"] = layer.enabled

    worker = threading.Thread(target=mean_network)
    worker.start()
    assert inside.wait(10)
    assert layer.enabled and bool((layer(torch.ones(1000)) == 0).any())  # this thread still drops units
    done.set()
    worker.join(10)
    assert seen == {"inside": True, "after": True}
    with dropout_disabled(layer), dropout_disabled(layer):  # nested: on again only at the outer exit
        pass
    assert layer.enabled
