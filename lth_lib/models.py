"""The paper's networks (LeNet-300-100, Conv-2/4/6), built by name.

Every network holds a *stack* of K independent members: each weight has a leading
member dimension, fully connected layers run as one batched matmul and conv layers as
one grouped convolution. K = 1 is an ordinary single network; K > 1 trains the trials
and controls of a pruning round as one job (see `lth_lib.train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lth_lib.seeding import generator


@dataclass(frozen=True)
class Architecture:
    """A network as the paper's Figure 2 table describes it."""

    name: str
    dataset: str  # "mnist" or "cifar10"
    input_shape: tuple[int, ...]
    conv: tuple[int | str, ...]  # output channels of each 3x3 conv, "pool" for 2x2 max pool
    fc: tuple[int, ...]  # widths of the fully connected layers, the last is the output


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("lenet300", "mnist", (784,), (), (300, 100, 10)),
        Architecture("conv2", "cifar10", (3, 32, 32), (64, 64, "pool"), (256, 256, 10)),
        Architecture(
            "conv4", "cifar10", (3, 32, 32), (64, 64, "pool", 128, 128, "pool"), (256, 256, 10)
        ),
        Architecture(
            "conv6",
            "cifar10",
            (3, 32, 32),
            (64, 64, "pool", 128, 128, "pool", 256, 256, "pool"),
            (256, 256, 10),
        ),
    )
}


def architecture(name: str) -> Architecture:
    """The architecture called `name`; an unknown name is an error listing the known ones."""
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown network {name!r}; known networks: {known}")
    return ARCHITECTURES[name]


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


class Network(nn.Module):
    """K members of one architecture; input [K, B, *input_shape] (or [B, ...] shared by all)."""

    def __init__(self, name: str, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.arch = architecture(name)
        self.members = members
        self.layers = nn.ModuleDict()
        channels, side = (self.arch.input_shape[0], self.arch.input_shape[-1])
        conv_index = 0
        for item in self.arch.conv:
            if item == "pool":
                side //= 2
                continue
            conv_index += 1
            self.layers[f"conv{conv_index}"] = StackedConv(members, channels, int(item))
            channels = int(item)
        features = channels * side * side if self.arch.conv else self.arch.input_shape[0]
        for index, width in enumerate(self.arch.fc, start=1):
            self.layers[f"fc{index}"] = StackedLinear(members, features, width)
            features = width

    @property
    def output_layer(self) -> str:
        """Name of the output layer (its pruning rate: `lth_lib.pruning.output_rate`)."""
        return f"fc{len(self.arch.fc)}"

    def prunable(self) -> dict[str, nn.Parameter]:
        """The prunable weights by layer name (biases are never pruned)."""
        return {name: layer.weight for name, layer in self.layers.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        for layer in fc[:-1]:
            x = F.relu(layer(x))
        return fc[-1](x)

    @torch.no_grad()
    def initialize(self, seeds: list[int]) -> None:
        """Gaussian Glorot weights and zero biases, member k drawn from `seeds[k]` alone."""
        if len(seeds) != self.members:
            raise ValueError(f"need {self.members} seeds, got {len(seeds)}")
        for k, seed in enumerate(seeds):
            for name, value in glorot_init(self, seed).items():
                self.get_parameter(name)[k].copy_(value)

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


def glorot_init(network: Network, seed: int) -> dict[str, torch.Tensor]:
    """One member's initial parameters: Xavier-normal weights, zero biases, from `seed`."""
    g = generator(seed, "init")
    state = {}
    for name, p in network.named_parameters():
        shape = p.shape[1:]
        if name.endswith("weight"):
            receptive = shape[2:].numel() if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            state[name] = torch.randn(shape, generator=g) * std
        else:
            state[name] = torch.zeros(shape)
    return state


def build_network(name: str, seeds: list[int] | int = 0, device: str | torch.device = "cpu") -> Network:
    """A network called `name` with one member per seed, initialised and moved to `device`."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    network = Network(name, members=len(seeds))
    network.initialize(seeds)
    return network.to(device)


def count_prunable(name: str) -> dict[str, int]:
    """Prunable weights per layer of one member of network `name`."""
    return {layer: w[0].numel() for layer, w in Network(name).prunable().items()}
