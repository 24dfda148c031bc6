"""The paper's networks (LeNet-300-100, Conv-2/4/6), built by name.

Every network holds a *stack* of K independent members: each weight has a leading
member dimension, fully connected layers run as one batched matmul and conv layers as
one grouped convolution. K = 1 is an ordinary single network; K > 1 trains the trials
and controls of a pruning round as one job (see `lth_lib.train`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lth_lib.protocol import architecture
from lth_lib.seeding import generator


class StackedConv(nn.Module):
    """K independent 3x3 'same' convolutions run as one grouped convolution."""

    def __init__(self, members: int, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(members, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, K*C, H, W]
        k, out, inp = self.weight.shape[:3]
        return F.conv2d(
            x, self.weight.view(k * out, inp, 3, 3), self.bias.view(k * out), padding=1, groups=k
        )


class StackedLinear(nn.Module):
    """K independent fully connected layers run as one batched matmul."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [K, B, in]
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix of int64 `x` (values below 2**32 in and out; no product overflows)."""
    x = x & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


class Dropout:
    """Dropout whose masks are drawn from each member's seed, the step and the unit by integer
    hashing on the device, not from a global generator: member k drops what it would drop
    trained alone, reproducibly from its seed, on any device, inside a CUDA graph.

    `step` is a device tensor the caller advances (TrainStep's step counter); kept units
    are scaled by 1 / (1 - rate) (inverted dropout), so evaluation uses no dropout."""

    def __init__(self, rate: float, seeds: list[int], step: torch.Tensor):
        self.keep = 1.0 - rate
        self.threshold = int(self.keep * 2**32)
        self.seeds = _hash32(torch.tensor(seeds, dtype=torch.int64, device=step.device))
        self.step = step

    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor:  # x: [K, B, F]
        key = _hash32(_hash32(self.seeds ^ self.step.long()) + layer)
        units = torch.arange(x[0].numel(), device=x.device).view(x.shape[1:])
        bits = _hash32(key.view(-1, 1, 1) + units * 0x9E3779B9)
        return x * (bits < self.threshold) / self.keep


class Network(nn.Module):
    """K members of one architecture; input [K, B, *input_shape] (or [B, ...] shared by all)."""

    def __init__(self, name: str, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.name = name
        self.arch = architecture(name)
        self.members = members
        self.layers = nn.ModuleDict(
            {
                layer: (StackedConv if layer.startswith("conv") else StackedLinear)(members, inputs, outputs)
                for layer, (inputs, outputs) in layer_sizes(name).items()
            }
        )

    def prunable(self) -> dict[str, nn.Parameter]:
        """The prunable weights by layer name (biases are never pruned)."""
        return {name: layer.weight for name, layer in self.layers.items()}

    def forward(self, x: torch.Tensor, dropout: Dropout | None = None) -> torch.Tensor:
        """Logits [K, B, classes]; `dropout` (training only) drops hidden fc units."""
        k = self.members
        if x.dim() == len(self.arch.input_shape) + 1:  # one input batch shared by all members
            x = x.unsqueeze(0).expand(k, *x.shape)
        batch = x.shape[1]
        if self.arch.conv:
            channels, *spatial = self.arch.input_shape
            x = x.transpose(0, 1).reshape(batch, k * channels, *spatial)
            layers = iter(self.layers.values())
            for item in self.arch.conv:
                x = F.max_pool2d(x, 2) if item == "pool" else F.relu(next(layers)(x))
            x = x.view(batch, k, -1).transpose(0, 1)
        fc = [layer for name, layer in self.layers.items() if name.startswith("fc")]
        for index, layer in enumerate(fc[:-1]):
            x = F.relu(layer(x))
            if dropout is not None:
                x = dropout(index, x)
        return fc[-1](x)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters as a {name: tensor} copy, without the member dimension."""
        return {name: p[k].detach().clone() for name, p in self.named_parameters()}

    @torch.no_grad()
    def load_members(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Set member k's parameters from `states[k]` (as returned by `member_state`)."""
        if len(states) != self.members:
            raise ValueError(f"need {self.members} member states, got {len(states)}")
        for name, p in self.named_parameters():
            p.copy_(torch.stack([s[name] for s in states]).to(p.device))


def layer_sizes(name: str) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of each weight layer of network `name`: channels of a conv layer,
    features of a fully connected one."""
    arch = architecture(name)
    sizes, channels, side = {}, arch.input_shape[0], arch.input_shape[-1]
    convs = iter(layer for layer in arch.layers if layer.startswith("conv"))
    for item in arch.conv:
        if item == "pool":
            side //= 2
        else:
            sizes[next(convs)], channels = (channels, int(item)), int(item)
    features = channels * side * side if arch.conv else arch.input_shape[0]
    for index, width in enumerate(arch.fc, start=1):
        sizes[f"fc{index}"], features = (features, width), width
    return sizes


def multiply_adds(name: str) -> int:
    """Multiply-adds of one forward pass of one example through network `name` (dense; the
    3x3 convolutions keep the image's size): a measure of its training's cost."""
    arch, side, total = architecture(name), architecture(name).input_shape[-1], 0
    sizes = iter(layer_sizes(name).values())
    for item in arch.conv:
        if item == "pool":
            side //= 2
        else:
            inputs, outputs = next(sizes)
            total += inputs * outputs * 9 * side * side
    return total + sum(inputs * outputs for inputs, outputs in sizes)


def parameter_shapes(name: str) -> dict[str, torch.Size]:
    """One member's parameter shapes, named as `Network(name).named_parameters()` names them."""
    shapes = {}
    for layer, (inputs, outputs) in layer_sizes(name).items():
        kernel = (3, 3) if layer.startswith("conv") else ()
        shapes[f"layers.{layer}.weight"] = torch.Size((outputs, inputs, *kernel))
        shapes[f"layers.{layer}.bias"] = torch.Size((outputs,))
    return shapes


def glorot_init(name: str, seed: int) -> dict[str, torch.Tensor]:
    """One member of network `name`'s initial parameters: Xavier-normal weights, zero
    biases, from `seed`."""
    g = generator(seed, "init")
    state = {}
    for key, shape in parameter_shapes(name).items():
        if key.endswith("weight"):
            receptive = shape[2:].numel() if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            state[key] = torch.randn(shape, generator=g) * std
        else:
            state[key] = torch.zeros(shape)
    return state


def count_prunable(name: str) -> dict[str, int]:
    """Prunable weights per layer of one member of network `name`."""
    return {key.split(".")[1]: shape.numel() for key, shape in parameter_shapes(name).items() if key.endswith("weight")}
