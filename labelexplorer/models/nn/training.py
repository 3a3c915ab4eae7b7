"""The training loop shared by every torch model: Adam, a validation split, reduce-on-plateau,
early stopping, progress, and checkpoints that survive Ctrl-C.

What it does, per epoch: shuffle the training part (a permutation seeded by
``(seed, epoch)``), take Adam steps on mini-batches (calling ``constrain(module)`` after
each, e.g. a max-norm constraint), compute the validation loss, then

* reduce the learning rate ×``lr_factor`` after ``lr_patience`` epochs without an
  improvement of more than ``min_delta`` (Keras ``ReduceLROnPlateau`` semantics);
* stop after ``early_stopping_patience`` epochs without improvement and restore the
  weights of the best epoch (the best epoch's weights are always the result). With
  ``min_epochs`` the monitoring starts at that epoch (Keras' ``start_from_epoch``): a
  small training set, whose tiny validation set is noisy and whose learned variances
  are still wild in the first epochs, can neither stop early nor keep an early epoch.

Options used by the galaxy CNN (Wu & Boada 2019, fastai style); the defaults keep the
behaviour above: ``optimizer="adamw"`` with ``weight_decay`` (decoupled weight decay,
Loshchilov & Hutter 2017); ``schedule="cosine-restarts"``, a cosine annealing of the
learning rate at every step from its initial value down to ``min_lr`` over cycles of
``restart_epochs · restart_mult^k`` epochs, restarted at the top after each cycle
(Loshchilov & Hutter 2016; the plateau reduction is then off); and
``parameter_groups`` given to :func:`train`, each with its own learning-rate multiplier
(discriminative learning rates) and a number of initial epochs during which it is
frozen (no gradient, no update).

Reproducibility and resuming: torch's global generator is re-seeded from
``(seed, epoch)`` at the start of every epoch and its state is recorded after every
step, so a run interrupted and resumed follows the same trajectory as an uninterrupted
one. With ``checkpoint_dir`` set, the state is written after every epoch into
``checkpoint_dir/latest`` (atomically, replacing the previous one) as

* ``model.safetensors``, ``best.safetensors``: current and best weights;
* ``optimizer.safetensors``: the optimizer's tensors (Adam moments and step counts);
* ``rng.safetensors``: generator states;
* ``state.json``: position (epoch, step), learning rate, plateau/early-stopping
  counters, history, the optimizer's scalar settings, and a fingerprint of the data and
  hyperparameters.

Nothing is pickled (``torch.save`` of an optimizer state would be). A
``KeyboardInterrupt`` saves the state reached so far (mid-epoch positions included)
and is re-raised; calling the training again with the same ``checkpoint_dir`` and the
same data resumes from there. A checkpoint made for other data or hyperparameters is
refused rather than silently reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..._files import atomic_directory
from ...exceptions import LabelExplorerError, ModelFileError
from .device import flush_denormals, forked_rng

__all__ = ["TrainingSettings", "TrainingResult", "train", "split_indices", "optimizer_tensors",
           "load_optimizer_tensors", "module_tensors", "cosine_restart_factor"]

CHECKPOINT_FORMAT = 1


@dataclasses.dataclass
class TrainingSettings:
    """Knobs of :func:`train` (defaults: Leung & Bovy 2019).

    ``warmup_epochs`` epochs at the start run with ``batch["warmup"]`` True, for a loss that
    starts differently (e.g. learned variances held fixed): their validation losses are not
    compared with the later ones, so they set no best epoch, no plateau and no early stop.

    Examples
    --------
    >>> TrainingSettings(epochs=3).batch_size
    64
    """

    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 5e-4
    validation_fraction: float = 0.1
    lr_factor: float = 0.5
    lr_patience: int = 2
    min_lr: float = 1e-8
    min_delta: float = 1e-4
    early_stopping_patience: int = 4
    min_epochs: int = 0
    warmup_epochs: int = 0
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    progress: bool = True
    description: str = "training"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "plateau"
    restart_epochs: int = 1
    restart_mult: int = 1


@dataclasses.dataclass
class TrainingResult:
    """What happened: one record per epoch (``epoch``, ``loss``, ``val_loss``, ``lr``), the best
    epoch (1-based), whether early stopping ended it, and the epoch it resumed from (or None)."""

    history: list[dict]
    best_epoch: int
    stopped_early: bool
    resumed_from: int | None


@dataclasses.dataclass(frozen=True)
class _LoopState:
    """Everything needed to continue; replaced as a whole so an interrupt never sees half an update."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps in the current epoch
    lr: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    plateau_best: float = math.inf
    plateau_wait: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    early_wait: int = 0
    finished: bool = False
    stopped_early: bool = False
    history: tuple = ()
    rng: tuple = ()  # generator states after the last completed step


def split_indices(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random training / validation indices (at least one validation row when asked and n > 1).

    Examples
    --------
    >>> train_rows, val_rows = split_indices(20, 0.1, seed=0)
    >>> len(train_rows), len(val_rows), sorted(np.concatenate([train_rows, val_rows]).tolist()) == list(range(20))
    (18, 2, True)
    """
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def cosine_restart_factor(position: float, restart_epochs: int, restart_mult: int) -> float:
    """Cosine-annealing factor in [0, 1] at *position* epochs, with warm restarts.

    Cycles last ``restart_epochs · restart_mult^k`` epochs; the factor falls from 1 at
    the start of a cycle to 0 at its end.

    Examples
    --------
    >>> [round(cosine_restart_factor(t, 1, 2), 3) for t in (0.0, 0.5, 1.0, 2.0, 3.0)]
    [1.0, 0.5, 1.0, 0.5, 1.0]
    """
    start, length = 0.0, float(restart_epochs)
    while position >= start + length:
        start, length = start + length, length * restart_mult
    return 0.5 * (1.0 + math.cos(math.pi * (position - start) / length))


def _make_optimizer(module: torch.nn.Module, settings: TrainingSettings,
                    parameter_groups: Sequence[Mapping] | None) -> torch.optim.Optimizer:
    """Adam or AdamW over *parameter_groups* (``params``, ``lr_scale``, ``frozen_epochs``), or all parameters."""
    if settings.optimizer not in ("adam", "adamw"):
        raise LabelExplorerError(f"optimizer: expected 'adam' or 'adamw', got {settings.optimizer!r}")
    if settings.schedule not in ("plateau", "cosine-restarts"):
        raise LabelExplorerError(f"schedule: expected 'plateau' or 'cosine-restarts', got {settings.schedule!r}")
    groups = [{"params": list(module.parameters())}] if parameter_groups is None else [
        {"params": list(group["params"]), "lr_scale": float(group.get("lr_scale", 1.0)),
         "frozen_epochs": int(group.get("frozen_epochs", 0))} for group in parameter_groups]
    kind = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    # the fused kernel updates every tensor in one pass: several times faster than the default on CPU
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return kind(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=fused)


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a module's state dict, ready for safetensors."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in module.state_dict().items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (for safetensors) and JSON-able settings.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(layer.parameters())
    >>> layer(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> tensors, settings = optimizer_tensors(opt)
    >>> sorted(tensors)[:3], settings["param_groups"][0]["lr"]
    (['state.0.exp_avg', 'state.0.exp_avg_sq', 'state.0.step'], 0.001)
    """
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                           settings: Mapping) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in settings.get("scalars", {}).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": [dict(g) for g in settings["param_groups"]]})
    # the stored moments are contiguous; give them their parameter's memory layout (e.g. channels-last
    # convolutions), without which Adam's multi-tensor update does not continue the same trajectory
    for param, entries in optimizer.state.items():
        for key, value in entries.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                entries[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _rng_states(device: torch.device) -> tuple:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return tuple(states)


def _set_rng_states(states: Sequence[torch.Tensor], device: torch.device) -> None:
    if states:
        torch.set_rng_state(states[0])
        if device.type == "cuda" and len(states) > 1:
            torch.cuda.set_rng_state(states[1], device)


class _Checkpoint:
    """Reads and writes ``checkpoint_dir/latest``."""

    def __init__(self, directory, fingerprint: str):
        self.directory = Path(directory) / "latest"
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return (self.directory / "state.json").is_file()

    def save(self, state: _LoopState, module, best: Mapping[str, torch.Tensor], optimizer) -> None:
        opt_tensors, opt_settings = optimizer_tensors(optimizer)
        fields = dataclasses.asdict(state)
        fields.pop("rng")
        fields["history"] = list(state.history)
        document = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "loop": fields,
                    "optimizer": opt_settings}
        with atomic_directory(self.directory) as tmp:
            save_file(module_tensors(module), str(tmp / "model.safetensors"))
            save_file(dict(best), str(tmp / "best.safetensors"))
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            save_file({f"rng{i}": s.contiguous() for i, s in enumerate(state.rng)}, str(tmp / "rng.safetensors"))
            (tmp / "state.json").write_text(json.dumps(document, indent=1, default=_jsonable))

    def load(self, module, optimizer, device) -> tuple[_LoopState, dict[str, torch.Tensor]]:
        try:
            document = json.loads((self.directory / "state.json").read_text())
            if document.get("fingerprint") != self.fingerprint:
                raise LabelExplorerError(
                    f"checkpoint_dir: {self.directory.parent} holds a checkpoint of a different training run "
                    "(other data or hyperparameters); use another checkpoint_dir or delete it to start afresh")
            module.load_state_dict(load_file(str(self.directory / "model.safetensors"), device=str(device)))
            best = load_file(str(self.directory / "best.safetensors"))
            load_optimizer_tensors(optimizer, load_file(str(self.directory / "optimizer.safetensors"),
                                                        device=str(device)), document["optimizer"])
            rng = load_file(str(self.directory / "rng.safetensors"))
            loop = dict(document["loop"])
        except (OSError, json.JSONDecodeError, KeyError, RuntimeError, ValueError, SafetensorError) as exc:
            raise ModelFileError(f"{self.directory}: unreadable training checkpoint ({exc}); delete it to "
                                 "start afresh") from exc
        loop["history"] = tuple(loop["history"])
        loop["rng"] = tuple(rng[f"rng{i}"] for i in range(len(rng)))
        return _LoopState(**loop), best


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def _evaluate(module, loss_fn, data, rows: np.ndarray, batch_size: int, device, seed: int,
              warmup: bool = False) -> float:
    """Mean loss over *rows* with a fixed dropout seed (the same masks every epoch), in the warm-up or not."""
    if rows.size == 0:
        return math.nan
    module.eval()
    total = 0.0
    with torch.no_grad(), forked_rng(device):
        torch.manual_seed(seed)
        for start in range(0, rows.size, batch_size):
            index = torch.as_tensor(rows[start:start + batch_size])
            batch = {key: value[index].to(device, non_blocking=True) for key, value in data.items()}
            batch["warmup"] = warmup
            total += float(loss_fn(module, batch)) * index.numel()
    module.train()
    return total / rows.size


def _after_epoch(state: _LoopState, settings: TrainingSettings, val_loss: float, module,
                 best: dict) -> tuple[_LoopState, dict]:
    """Plateau and early-stopping bookkeeping; returns the new state and best weights."""
    epoch = state.epoch + 1
    train_loss = state.loss_sum / max(state.loss_count, 1)
    monitored = val_loss if math.isfinite(val_loss) else train_loss
    record = {"epoch": epoch, "loss": train_loss, "val_loss": val_loss, "lr": state.lr}
    lr, plateau_best, plateau_wait = state.lr, state.plateau_best, state.plateau_wait
    warmed_up = epoch > settings.warmup_epochs  # the warm-up's loss is another one: not watched
    if warmed_up and monitored < plateau_best - settings.min_delta:
        plateau_best, plateau_wait = monitored, 0
    elif warmed_up:
        plateau_wait += 1
        if plateau_wait >= settings.lr_patience and settings.schedule == "plateau":
            lr, plateau_wait = max(lr * settings.lr_factor, settings.min_lr), 0
    best_loss, best_epoch, early_wait = state.best_loss, state.best_epoch, state.early_wait
    if epoch >= min(max(settings.min_epochs, settings.warmup_epochs + 1), settings.epochs):
        # before min_epochs and during the warm-up: no best epoch, no stopping
        if monitored < best_loss - settings.min_delta or best_epoch == 0:
            best_loss, best_epoch, early_wait = monitored, epoch, 0
            best = module_tensors(module)
        else:
            early_wait += 1
    stop = early_wait >= settings.early_stopping_patience
    new = dataclasses.replace(state, epoch=epoch, step=0, lr=lr, loss_sum=0.0, loss_count=0,
                              plateau_best=plateau_best, plateau_wait=plateau_wait, best_loss=best_loss,
                              best_epoch=best_epoch, early_wait=early_wait, stopped_early=stop,
                              finished=stop or epoch >= settings.epochs, history=state.history + (record,))
    return new, best


def train(module: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
          data: Mapping[str, torch.Tensor], settings: TrainingSettings, *, device: torch.device,
          constrain: Callable[[torch.nn.Module], None] | None = None,
          callbacks: Sequence[Callable[[dict], None]] = (), fingerprint: str = "",
          parameter_groups: Sequence[Mapping] | None = None,
          rows: tuple[np.ndarray, np.ndarray] | None = None) -> TrainingResult:
    """Train *module* in place; on return it holds the weights of the best epoch.

    Parameters
    ----------
    module : torch.nn.Module
        On *device* already.
    loss_fn : callable
        ``loss_fn(module, batch) -> scalar tensor`` where *batch* maps the keys of *data*
        to the rows of one mini-batch (on *device*), and ``"warmup"`` to whether the epoch is
        one of ``settings.warmup_epochs``. Regularisation belongs in here.
    data : mapping of str to tensor
        Same-length tensors (kept where they are; mini-batches are moved to *device*).
    settings : TrainingSettings
    device : torch.device
    constrain : callable, optional
        Called after every optimizer step (weight constraints).
    callbacks : sequence of callables
        Each called with the epoch record (``epoch``, ``loss``, ``val_loss``, ``lr``) after
        the epoch's checkpoint is written. Raising ``KeyboardInterrupt`` there interrupts
        training like Ctrl-C.
    fingerprint : str
        Identifies the data and hyperparameters; a checkpoint with another one is refused.
    parameter_groups : sequence of mappings, optional
        Each with ``params`` (parameters of *module*), ``lr_scale`` (multiplies the
        learning rate; default 1) and ``frozen_epochs`` (epochs at the start during which
        they are not trained; default 0). Default: one group of every parameter.
    rows : (train_rows, validation_rows), optional
        Row positions of *data* to train on and to validate on, for a split the caller
        made (e.g. stratified by class); the rest of *data* is not used. Default: a random
        split by ``settings.validation_fraction``.

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> layer = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 64)[:, None]
    >>> loss = lambda m, b: ((m(b["x"]) - 3 * b["x"]) ** 2).mean()
    >>> result = train(layer, loss, {"x": x}, TrainingSettings(epochs=40, batch_size=8, learning_rate=0.05,
    ...                progress=False), device=torch.device("cpu"))
    >>> round(float(layer.weight.detach()), 1)
    3.0
    """
    names = list(data)
    n_rows = len(data[names[0]])
    if any(len(value) != n_rows for value in data.values()):
        raise LabelExplorerError("train: every data tensor needs the same number of rows")
    run = _Run(module, loss_fn, data, settings, device, constrain, fingerprint, parameter_groups, rows)
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(flush_denormals())
        cleanup.callback(run.unfreeze)
        bar = _progress_bar(settings, run.state)
        if bar is not None:
            cleanup.callback(bar.close)
        try:
            while not run.state.finished:
                record = run.epoch()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", val_loss=f"{record['val_loss']:.4g}",
                                    lr=f"{record['lr']:.2g}")
                for callback in callbacks:
                    callback(dict(record))
        except KeyboardInterrupt:
            run.save_after_interrupt()
            raise
    if run.best:
        module.load_state_dict({key: value.to(device) for key, value in run.best.items()})
    state = run.state
    return TrainingResult(list(state.history), state.best_epoch, state.stopped_early, run.resumed_from)


def _given_rows(rows, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The caller's (train, validation) row positions, checked."""
    train_rows, val_rows = (np.asarray(part, dtype=np.int64).ravel() for part in rows)
    if train_rows.size == 0:
        raise LabelExplorerError("train: rows= gives no training row")
    for part in (train_rows, val_rows):
        if part.size and (part.min() < 0 or part.max() >= n_rows):
            raise LabelExplorerError(f"train: rows= positions must lie in [0, {n_rows})")
    return train_rows, val_rows


class _Run:
    """One training run: its data split, optimizer, checkpoint and current state."""

    def __init__(self, module, loss_fn, data, settings: TrainingSettings, device, constrain, fingerprint: str,
                 parameter_groups: Sequence[Mapping] | None = None,
                 rows: tuple[np.ndarray, np.ndarray] | None = None):
        self.module, self.loss_fn, self.data, self.settings = module, loss_fn, data, settings
        self.device, self.constrain = device, constrain
        n_rows = len(next(iter(data.values())))
        self.train_rows, self.val_rows = (split_indices(n_rows, settings.validation_fraction, settings.seed)
                                          if rows is None else _given_rows(rows, n_rows))
        self.batches_per_epoch = max(1, math.ceil(self.train_rows.size / settings.batch_size))
        self.optimizer = _make_optimizer(module, settings, parameter_groups)
        self.checkpoint = _Checkpoint(settings.checkpoint_dir, fingerprint) if settings.checkpoint_dir else None
        self.state, self.best, self.resumed_from = _LoopState(lr=settings.learning_rate), {}, None
        self.in_step = False  # True while parameters are being updated (an interrupt there is not saved)
        if self.checkpoint is not None and self.checkpoint.exists():
            self.state, self.best = self.checkpoint.load(module, self.optimizer, device)
            self.resumed_from = self.state.epoch
            _set_rng_states(self.state.rng, device)
        module.train()

    def epoch(self) -> dict:
        """Finish the current epoch (from wherever it stands); returns its record."""
        settings, state = self.settings, self.state
        self._set_learning_rates(state.lr)
        for group in self.optimizer.param_groups:
            frozen = state.epoch < group.get("frozen_epochs", 0)
            for parameter in group["params"]:
                parameter.requires_grad_(not frozen)
        if state.step == 0:
            torch.manual_seed(_derived_seed(settings.seed, state.epoch, 0))
        order = torch.randperm(self.train_rows.size, generator=torch.Generator().manual_seed(
            _derived_seed(settings.seed, state.epoch, 1)))
        rows = torch.as_tensor(self.train_rows)[order]
        for step in range(state.step, self.batches_per_epoch):
            self._step(rows[step * settings.batch_size:(step + 1) * settings.batch_size], step)
        val_loss = _evaluate(self.module, self.loss_fn, self.data, self.val_rows, max(settings.batch_size, 256),
                             self.device, _derived_seed(settings.seed, 2**31), self._warming_up())
        self.state, self.best = _after_epoch(self.state, settings, val_loss, self.module, self.best)
        if self.checkpoint is not None:
            self.checkpoint.save(self.state, self.module, self.best, self.optimizer)
        return self.state.history[-1]

    def _set_learning_rates(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def unfreeze(self) -> None:
        """Make every parameter trainable again (frozen groups are frozen only during training)."""
        for group in self.optimizer.param_groups:
            for parameter in group["params"]:
                parameter.requires_grad_(True)

    def _warming_up(self) -> bool:
        return self.state.epoch < self.settings.warmup_epochs

    def _step(self, index: torch.Tensor, step: int) -> None:
        batch = {key: value[index].to(self.device, non_blocking=True) for key, value in self.data.items()}
        batch["warmup"] = self._warming_up()
        lr = self.state.lr
        if self.settings.schedule == "cosine-restarts":
            settings = self.settings
            factor = cosine_restart_factor(self.state.epoch + step / self.batches_per_epoch, settings.restart_epochs,
                                           settings.restart_mult)
            lr = settings.min_lr + (settings.learning_rate - settings.min_lr) * factor
            self._set_learning_rates(lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.module, batch)
        if not torch.isfinite(loss):
            raise LabelExplorerError(f"{self.settings.description}: the loss became {float(loss)} at epoch "
                                     f"{self.state.epoch + 1}; try a smaller learning_rate")
        loss.backward()
        self.in_step = True
        self.optimizer.step()
        if self.constrain is not None:
            self.constrain(self.module)
        state = self.state
        self.state = dataclasses.replace(state, step=step + 1, lr=lr,
                                         loss_sum=state.loss_sum + float(loss.detach()) * index.numel(),
                                         loss_count=state.loss_count + index.numel(), rng=_rng_states(self.device))
        self.in_step = False

    def save_after_interrupt(self) -> None:
        """Write the state reached so far, unless the interrupt hit a parameter update."""
        if self.checkpoint is None or self.in_step:
            return
        self.checkpoint.save(self.state, self.module, self.best, self.optimizer)
        state = self.state
        where = f"epoch {state.epoch + 1}, step {state.step}" if state.step else f"after epoch {state.epoch}"
        print(f"{self.settings.description} interrupted ({where}); checkpoint saved in {self.checkpoint.directory}. "
              "Call fit again with the same checkpoint_dir to resume.")


def _progress_bar(settings: TrainingSettings, state: _LoopState):
    if not settings.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=settings.epochs, initial=state.epoch, desc=settings.description, unit="epoch")
