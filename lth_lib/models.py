"""The networks, built from their architectures (`lth_lib.protocol.NETWORKS`).

Every network holds a *stack* of K independent members: each weight has a leading
member dimension, fully connected layers run as one batched matmul and conv layers as
one grouped convolution. K = 1 is an ordinary single network; K > 1 trains the trials
and controls of a pruning round as one job (see `lth_lib.train`).

A network is described once, by its `Architecture`; what else is known about it (its
parameters' shapes, weights per layer, multiply-adds, a plain PyTorch copy) is read off
the module built from it: one member built on the meta device, which costs no memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lth_lib.protocol import Architecture, Conv, Dense, Pool, architecture
from lth_lib.seeding import generator

State = dict[str, torch.Tensor]  # one member's parameters, named as `Network.named_parameters()` names them
WEIGHT = "layers.{}.weight"  # the name of a layer's weight in a State (and in `Network.named_parameters()`)


class StackedConv(nn.Module):
    """K independent 'same' convolutions (odd square kernels) run as one grouped convolution."""

    def __init__(self, members: int, in_channels: int, out_channels: int, kernel: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(members, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, K*C, H, W]
        members, out, inputs, kernel = self.weight.shape[:4]
        return F.conv2d(
            x, self.weight.view(members * out, inputs, kernel, kernel), self.bias.view(members * out),
            padding=kernel // 2, groups=members,
        )  # fmt: skip


class StackedPool(nn.Module):
    """Max pooling of every member's channels at once."""

    def __init__(self, size: int = 2):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, K*C, H, W]
        return F.max_pool2d(x, self.size)


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
        self.name, self.arch, self.members = name, architecture(name), members
        # each layer as a stacked module, named as `Architecture.named_layers` names it; the
        # sizes follow the input through the layers
        channels, side = self.arch.input_shape[0], self.arch.input_shape[-1]
        features = channels * side * side if self.arch.convolutional else self.arch.input_shape[0]
        self.layers = nn.ModuleDict()
        for layer_name, layer in self.arch.named_layers.items():
            if isinstance(layer, Conv):
                self.layers[layer_name] = StackedConv(members, channels, layer.channels, layer.kernel)
                channels = layer.channels
            elif isinstance(layer, Pool):
                self.layers[layer_name], side = StackedPool(layer.size), side // layer.size
            else:
                self.layers[layer_name], features = (
                    StackedLinear(members, features, layer.features),
                    layer.features,
                )
            if not isinstance(layer, Dense):
                features = channels * side * side

    def prunable(self) -> dict[str, nn.Parameter]:
        """The prunable weights by layer name (biases are never pruned)."""
        return {
            name: layer.weight for name, layer in self.layers.items() if not isinstance(layer, StackedPool)
        }

    def forward(self, x: torch.Tensor, dropout: Dropout | None = None) -> torch.Tensor:
        """Logits [K, B, classes]; `dropout` (training only) drops hidden fc units."""
        members = self.members
        if x.dim() == len(self.arch.input_shape) + 1:  # one input batch shared by all members
            x = x.unsqueeze(0).expand(members, *x.shape)
        batch = x.shape[1]
        layers = list(self.layers.values())
        dense = [layer for layer in layers if isinstance(layer, StackedLinear)]
        if self.arch.convolutional:
            channels, *spatial = self.arch.input_shape
            x = x.transpose(0, 1).reshape(batch, members * channels, *spatial)
            for layer in layers[: len(layers) - len(dense)]:
                x = F.relu(layer(x)) if isinstance(layer, StackedConv) else layer(x)
            x = x.view(batch, members, -1).transpose(0, 1)
        for index, layer in enumerate(dense[:-1]):
            x = F.relu(layer(x))
            if dropout is not None:
                x = dropout(index, x)
        return dense[-1](x)

    @torch.no_grad()
    def load_members(self, states: list[State]) -> None:
        """Set member k's parameters from `states[k]`."""
        if len(states) != self.members:
            raise ValueError(f"need {self.members} member states, got {len(states)}")
        for name, p in self.named_parameters():
            p.copy_(torch.stack([s[name] for s in states]).to(p.device))


@functools.cache
def _blueprint(name: str, arch: Architecture) -> Network:
    """One member of network `name` on the meta device: its shapes, no memory. Cached by
    architecture too, so a network registered again under the same name is built anew."""
    with torch.device("meta"):
        return Network(name)


def blueprint(name: str) -> Network:
    """One member of network `name` to read shapes off (on the meta device: no values)."""
    return _blueprint(name, architecture(name))


def parameter_shapes(name: str) -> dict[str, torch.Size]:
    """One member's parameter shapes, named as `Network(name).named_parameters()` names them."""
    return {key: p.shape[1:] for key, p in blueprint(name).named_parameters()}


def weight_shapes(name: str) -> dict[str, torch.Size]:
    """The shape of one member's prunable weight in each layer of network `name`, by layer name."""
    return {layer: weight.shape[1:] for layer, weight in blueprint(name).prunable().items()}


def count_prunable(name: str) -> dict[str, int]:
    """Prunable weights per layer of one member of network `name`."""
    return {layer: shape.numel() for layer, shape in weight_shapes(name).items()}


def layer_weights(name: str, state: State) -> State:
    """The prunable weights of a member state of network `name`, by layer name."""
    return {layer: state[WEIGHT.format(layer)] for layer in weight_shapes(name)}


def layer_multiply_adds(name: str) -> dict[str, int]:
    """Multiply-adds of one forward pass of one example through each weight layer of
    network `name` (dense, biases left out), counted on the meta device: a measure of its
    training's cost."""
    network, counts = blueprint(name), {}
    weighted = {
        layer: module for layer, module in network.layers.items() if not isinstance(module, StackedPool)
    }

    def counter(layer: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            # each output value (one member, one example) takes a multiply-add per weight of its filter or row
            counts[layer] = output.numel() * module.weight[0, 0].numel()

        return count

    hooks = [module.register_forward_hook(counter(layer)) for layer, module in weighted.items()]
    try:
        network(torch.zeros(1, 1, *network.arch.input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return {layer: counts[layer] for layer in weighted}


def multiply_adds(name: str) -> int:
    """Multiply-adds of one forward pass of one example through network `name`
    (`layer_multiply_adds`, summed)."""
    return sum(layer_multiply_adds(name).values())


def glorot_init(name: str, seed: int) -> State:
    """One member of network `name`'s initial parameters: Xavier-normal weights, zero
    biases, from `seed`."""
    shapes, g = parameter_shapes(name), generator(seed, "init")
    state = {}
    for key, shape in shapes.items():
        if key.endswith("weight"):
            receptive = shape[2:].numel() if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            state[key] = torch.randn(shape, generator=g) * std
        else:
            state[key] = torch.zeros(shape)
    return state


def plain_network(name: str) -> nn.Sequential:
    """One member of network `name` as an unpruned `nn.Sequential` (PyTorch's default init):
    'same' convolutions with ReLU and max pools, a flatten in the (channel, height, width)
    order `Network.forward` uses, then linear layers with ReLU between them."""
    arch, shapes = architecture(name), parameter_shapes(name)
    layers: list[nn.Module] = []
    for layer_name, layer in arch.named_layers.items():
        if isinstance(layer, Pool):
            layers.append(nn.MaxPool2d(layer.size))
            continue
        out, inputs, *kernel = shapes[WEIGHT.format(layer_name)]
        if isinstance(layer, Conv):
            layers += [nn.Conv2d(inputs, out, kernel[0], padding=kernel[0] // 2), nn.ReLU()]
        else:
            if arch.convolutional and not any(isinstance(m, nn.Flatten) for m in layers):
                layers.append(nn.Flatten())
            layers += [nn.Linear(inputs, out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])
