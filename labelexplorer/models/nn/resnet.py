"""Residual networks (He et al. 2015) with BasicBlocks, written for this project.

torchvision is not available here, so this module builds the ResNet family itself:
ResNet-10/18/34 (BasicBlock stages of ``(1,1,1,1)``, ``(2,2,2,2)`` and ``(3,4,6,3)``
blocks) at any base width, on inputs of any size down to 1 × 1 pixel (every stride-2
layer pads, and the trunk ends with global pooling).

Parameter and buffer names follow the common PyTorch layout (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0`` ...), so a ResNet state dict saved by
another PyTorch project — e.g. ImageNet weights — loads into :class:`ResNetTrunk` with
:func:`load_trunk_weights` (its ``fc.*`` classifier is ignored).

Layer groups follow fastai (used by Wu & Boada 2019): group 0 = stem + ``layer1`` +
``layer2``, group 1 = ``layer3`` + ``layer4``, group 2 = the regression head; each group
may get its own learning rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ...exceptions import LabelExplorerError, ModelFileError
from .layers import DropoutStreams, MCDropout

__all__ = ["BasicBlock", "ResNetTrunk", "RegressionHead", "ResNetRegressor", "STAGES", "load_trunk_weights",
           "read_state_dict"]

STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Blocks per stage for each supported depth."""


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3 × 3 convolutions with batch normalisation and an identity (or 1 × 1) shortcut.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        Stride of the first convolution (2 halves the map, rounding up).

    Examples
    --------
    >>> block = BasicBlock(8, 16, stride=2)
    >>> block(torch.zeros(2, 8, 9, 9)).shape
    torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNetTrunk(nn.Module):
    """The convolutional part of a ResNet: stem, four stages, global pooling.

    Parameters
    ----------
    depth : int
        10, 18 or 34.
    width : int
        Channels of the stem and first stage (64 in the standard networks); the stages
        have ``width, 2·width, 4·width, 8·width`` channels.
    in_channels : int
        Input channels (3 for gri images).

    Attributes
    ----------
    n_features : int
        Output features: ``2 × 8 · width`` (average- and max-pooled maps concatenated, as
        fastai's ``AdaptiveConcatPool2d``).

    Examples
    --------
    >>> trunk = ResNetTrunk(18, width=8).eval()
    >>> trunk(torch.zeros(2, 3, 37, 21)).shape, trunk(torch.zeros(1, 3, 1, 1)).shape
    (torch.Size([2, 128]), torch.Size([1, 128]))
    """

    def __init__(self, depth: int = 34, width: int = 64, in_channels: int = 3):
        super().__init__()
        if depth not in STAGES:
            raise LabelExplorerError(f"depth: expected one of {sorted(STAGES)}, got {depth!r}")
        if int(width) != width or width < 1:
            raise LabelExplorerError(f"width: expected a positive integer, got {width!r}")
        width = int(width)
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for index, blocks in enumerate(STAGES[depth]):
            out_channels = width * 2 ** index
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, out_channels, stride)]
            stage += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            channels = out_channels
        self.n_features = 2 * channels
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # a residual branch that starts at zero makes every block the identity at first (Goyal et al. 2017),
        # which lets small datasets train without a warm-up
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's activation maps, before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.feature_maps(x)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters of fastai's two trunk groups: stem + layer1 + layer2, and layer3 + layer4."""
        early = [self.conv1, self.bn1, self.layer1, self.layer2]
        late = [self.layer3, self.layer4]
        return [[p for m in early for p in m.parameters()], [p for m in late for p in m.parameters()]]


class RegressionHead(nn.Module):
    """fastai's regression head: BN → dropout → linear → ReLU → BN → dropout → linear.

    The dropout layers are :class:`~labelexplorer.models.nn.layers.MCDropout`: on in
    training and, for Monte Carlo dropout, at inference.

    Parameters
    ----------
    n_features : int
        Trunk features.
    n_outputs : int
        Labels predicted.
    hidden : int
        Units of the hidden linear layer (512 in fastai).
    dropout : (float, float)
        Rates before the first and second linear layer (0.25 and 0.5 in fastai).

    Examples
    --------
    >>> head = RegressionHead(16, 1, hidden=8).eval()
    >>> head(torch.zeros(3, 16), DropoutStreams(0), repeats=5).shape
    torch.Size([15, 1])
    """

    def __init__(self, n_features: int, n_outputs: int = 1, hidden: int = 512,
                 dropout: Sequence[float] = (0.25, 0.5)):
        super().__init__()
        first, second = dropout
        self.bn1 = nn.BatchNorm1d(n_features)
        self.drop1 = MCDropout(first)
        self.fc1 = nn.Linear(n_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.drop2 = MCDropout(second)
        self.fc2 = nn.Linear(hidden, n_outputs)
        self.drop1.stream, self.drop2.stream = 0, 1
        nn.init.zeros_(self.fc2.bias)  # targets are standardised: start at their mean

    def forward(self, features: torch.Tensor, streams: DropoutStreams | None = None, repeats: int = 1) -> torch.Tensor:
        x = self.drop1(self.bn1(features), streams, repeats)
        x = self.bn2(self.relu(self.fc1(x)))
        return self.fc2(self.drop2(x, streams))


class ResNetRegressor(nn.Module):
    """A :class:`ResNetTrunk` and a :class:`RegressionHead`.

    Examples
    --------
    >>> net = ResNetRegressor(depth=10, width=4, hidden=8).eval()
    >>> net(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 1])
    >>> [len(group) for group in net.layer_groups()]
    [18, 18, 8]
    """

    def __init__(self, depth: int = 34, width: int = 64, n_outputs: int = 1, hidden: int = 512,
                 dropout: Sequence[float] = (0.25, 0.5)):
        super().__init__()
        self.trunk = ResNetTrunk(depth, width)
        self.head = RegressionHead(self.trunk.n_features, n_outputs, hidden, dropout)

    def forward(self, x: torch.Tensor, streams: DropoutStreams | None = None, repeats: int = 1) -> torch.Tensor:
        return self.head(self.trunk(x), streams, repeats)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The three fastai layer groups: early trunk, late trunk, head."""
        return self.trunk.layer_groups() + [list(self.head.parameters())]


# ---------------------------------------------------------------------------- weights from files
def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: ``.safetensors``, or a torch state dict read without pickle.

    Torch files are read with ``torch.load(..., weights_only=True)``, which refuses
    anything but tensors and plain containers; a checkpoint that wraps the weights in
    ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.

    Raises
    ------
    ModelFileError
        Missing or unreadable file, or contents that are not a mapping of tensors.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"state_dict": {"conv1.weight": torch.zeros(2)}}, path)
    >>> list(read_state_dict(path))
    ['conv1.weight']
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, zipfile and unpickler errors have no common base class
        raise ModelFileError(f"{path}: unreadable weights ({type(exc).__name__}: {exc}); expected a .safetensors "
                             "file or a torch state dict of plain tensors") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelFileError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


_PREFIXES = ("module.", "network.", "trunk.")
_IGNORED = ("fc.", "head.")  # another task's classifier or head


def load_trunk_weights(trunk: ResNetTrunk, source, *, name: str | None = None) -> list[str]:
    """Copy pretrained weights into *trunk*; returns the ignored classifier keys.

    Parameters
    ----------
    trunk : ResNetTrunk
    source : path or mapping of str to tensor
        A weights file (see :func:`read_state_dict`) or a state dict with the standard
        ResNet names (``conv1.weight``, ``layer1.0.bn1.running_mean`` ...), optionally
        prefixed ``module.``, ``network.`` or ``trunk.``. ``fc.*`` and ``head.*`` keys
        (a classifier for another task) are ignored.
    name : str, optional
        Name for messages.

    Raises
    ------
    ModelFileError
        If a trunk tensor is missing, a key is unknown, or a shape differs (e.g. weights
        of another depth or width).

    Examples
    --------
    >>> source = ResNetTrunk(10, width=4)
    >>> state = {f"module.{k}": v for k, v in source.state_dict().items()}
    >>> state["fc.weight"] = torch.zeros(1000, 32)
    >>> load_trunk_weights(ResNetTrunk(10, width=4), state)
    ['fc.weight']
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "pretrained weights")
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    if not all(torch.is_tensor(value) for value in state.values()):
        raise ModelFileError(f"{name}: expected a mapping of parameter names to tensors")
    cleaned, ignored = {}, []
    for key, value in state.items():
        short = key
        while short.startswith(_PREFIXES):
            short = short.split(".", 1)[1]
        if short.startswith(_IGNORED):
            ignored.append(key)
        else:
            cleaned[short] = value
    expected = trunk.state_dict()
    unknown = sorted(set(cleaned) - set(expected))
    missing = sorted(set(expected) - set(cleaned))
    if unknown or missing:
        parts = ([f"unknown keys {unknown[:3]}{' ...' if len(unknown) > 3 else ''}"] if unknown else []) + (
            [f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''}"] if missing else [])
        raise ModelFileError(f"{name}: does not match this ResNet trunk ({'; '.join(parts)}); expected the "
                             "standard ResNet names (conv1.weight, layer1.0.conv1.weight, ...) of the same depth")
    for key, value in cleaned.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelFileError(f"{name}: tensor {key!r} has shape {tuple(value.shape)}, this trunk needs "
                                 f"{tuple(expected[key].shape)}; expected weights of the same depth and width")
    trunk.load_state_dict({k: v.to(expected[k].dtype) for k, v in cleaned.items()}, strict=True)
    return ignored
