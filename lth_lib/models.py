"""The networks, built from their entries in `lth_lib.protocol.NETWORKS`.

Every network holds a *stack* of K independent members: each parameter has a leading
member dimension. K = 1 is an ordinary single network; K > 1 trains the trials and
controls of a pruning round as one job (see `lth_lib.train`). `stacked(name, K)` builds
either kind:
- `Network`, from an `Architecture` (the paper's Section 2-3 networks): fully connected
  layers run as one batched matmul and conv layers as one grouped convolution;
- `ModuleStack`, from a `CustomNetwork` (any `nn.Module`: Section 4's VGG-19 and ResNet,
  a user's own): K copies' parameters and buffers stacked and run through the module with
  `torch.func.vmap` and `functional_call`, batch normalisation included.

A network is described once, by its entry; what else is known about it (its parameters'
shapes, weights per layer, multiply-adds, a plain PyTorch copy) is read off the module
built from it: one member built on the meta device, which costs no memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lth_lib.protocol import Architecture, Conv, CustomNetwork, Dense, Pool, architecture
from lth_lib.seeding import derive_seed, generator, hash32

# One member's parameters (and buffers, for a ModuleStack), named as the network's
# `member_names` name them: `layers.fc1.weight` in a Network, the module's own names
# (`features.0.weight`, `bn.running_mean`) in a ModuleStack.
State = dict[str, torch.Tensor]
WEIGHT = "layers.{}.weight"  # the name of a Network layer's weight in a State
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # a CustomNetwork's prunable layers


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


class Dropout:
    """Dropout whose masks are drawn from each member's seed, the step and the unit by integer
    hashing on the device, not from a global generator: member k drops what it would drop
    trained alone, reproducibly from its seed, on any device, inside a CUDA graph.

    `step` is a device tensor the caller advances (TrainStep's step counter); kept units
    are scaled by 1 / (1 - rate) (inverted dropout), so evaluation uses no dropout."""

    def __init__(self, rate: float, seeds: list[int], step: torch.Tensor):
        self.keep = 1.0 - rate
        self.threshold = int(self.keep * 2**32)
        self.seeds = hash32(torch.tensor(seeds, dtype=torch.int64, device=step.device))
        self.step = step

    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor:  # x: [K, B, F]
        key = hash32(hash32(self.seeds ^ self.step.long()) + layer)
        units = torch.arange(x[0].numel(), device=x.device).view(x.shape[1:])
        bits = hash32(key.view(-1, 1, 1) + units * 0x9E3779B9)
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

    @property
    def weight_names(self) -> dict[str, str]:
        """Each prunable layer's weight's name in a State, by layer name."""
        return {layer: WEIGHT.format(layer) for layer in self.prunable()}

    def member_tensors(self) -> dict[str, torch.Tensor]:
        """Every stacked tensor a member State holds, by its name there."""
        return dict(self.named_parameters())

    def member_states(self) -> list[State]:
        """Each member's tensors as a {name: tensor} copy, without the member dimension."""
        return _member_states(self)

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
            x = x.reshape(batch, members, -1).transpose(0, 1)  # (a copy only where not contiguous)
        for index, layer in enumerate(dense[:-1]):
            x = F.relu(layer(x))
            if dropout is not None:
                x = dropout(index, x)
        return dense[-1](x)

    @torch.no_grad()
    def load_members(self, states: list[State]) -> None:
        """Set member k's tensors from `states[k]`."""
        _load(self.members, self.member_tensors(), states)


class ModuleStack(nn.Module):
    """K members of a `CustomNetwork`: the module built once on the meta device (`base`),
    each of its parameters and buffers stacked over the members (registered here with "."
    in their names as "/"), and a forward pass that runs the module on each member's
    tensors at once (`torch.func.vmap` over `functional_call`). Train/eval mode is the
    module's (`train()`, `eval()`): batch normalisation uses batch statistics and updates
    each member's running statistics in training, and uses them in evaluation."""

    def __init__(self, name: str, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.name, self.arch, self.members = name, architecture(name), members
        with torch.device("meta"):
            base = self.arch.make()
        self.base = [base]  # in a list: not a submodule, so its meta tensors are not this module's
        self.parameter_names = [key for key, _ in base.named_parameters()]
        for key, p in base.named_parameters():
            self.register_parameter(_flat(key), nn.Parameter(torch.zeros(members, *p.shape, dtype=p.dtype)))
        for key, b in base.named_buffers():
            self.register_buffer(_flat(key), torch.zeros(members, *b.shape, dtype=b.dtype))
        self.weight_names = {layer: f"{layer}.weight" for layer in layer_kinds(self.arch)}

    def train(self, mode: bool = True) -> ModuleStack:
        self.base[0].train(mode)
        return super().train(mode)

    def prunable(self) -> dict[str, nn.Parameter]:
        """The prunable weights (stacked) by layer name: every conv and linear weight."""
        return {layer: getattr(self, _flat(key)) for layer, key in self.weight_names.items()}

    def member_tensors(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter and buffer by its name in the module."""
        return {key.replace("/", "."): t for key, t in [*self.named_parameters(), *self.named_buffers()]}

    def member_states(self) -> list[State]:
        """Each member's parameters and buffers as a {name: tensor} copy."""
        return _member_states(self)

    def forward(self, x: torch.Tensor, dropout: Dropout | None = None) -> torch.Tensor:
        """Logits [K, B, classes] of input [K, B, *input_shape] (or [B, ...] shared by all)."""
        if dropout is not None:
            raise ValueError(f"{self.name} is a module of its own: dropout belongs in its module")
        tensors = self.member_tensors()
        params = {key: tensors[key] for key in self.parameter_names}
        buffers = {key: t for key, t in tensors.items() if key not in params}
        shared = x.dim() == len(self.arch.input_shape) + 1

        def one(p: dict, b: dict, inputs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.base[0], (p, b), (inputs,))

        return torch.func.vmap(one, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    @torch.no_grad()
    def load_members(self, states: list[State]) -> None:
        """Set member k's parameters and buffers from `states[k]`."""
        _load(self.members, self.member_tensors(), states)


def _member_states(network: Network | ModuleStack) -> list[State]:
    tensors = network.member_tensors().items()
    return [{name: t[k].detach().clone() for name, t in tensors} for k in range(network.members)]


def _flat(key: str) -> str:
    return key.replace(".", "/")


def _load(members: int, tensors: dict[str, torch.Tensor], states: list[State]) -> None:
    if len(states) != members:
        raise ValueError(f"need {members} member states, got {len(states)}")
    for name, t in tensors.items():
        t.copy_(torch.stack([s[name] for s in states]).to(t.device))


def stacked(name: str, members: int = 1) -> Network | ModuleStack:
    """K = `members` members of network `name`, zeroed: a `Network` for an Architecture, a
    `ModuleStack` for a CustomNetwork."""
    return (ModuleStack if isinstance(architecture(name), CustomNetwork) else Network)(name, members)


def layer_kinds(network: CustomNetwork) -> dict[str, str]:
    """A CustomNetwork's prunable layers (its conv and linear modules), "conv" or "fc", by
    their paths in the module, in order."""
    return {
        path: "fc" if isinstance(module, nn.Linear) else "conv"
        for path, module in _meta_module(network).named_modules()
        if isinstance(module, PRUNABLE)
    }


def module_fingerprint(network: CustomNetwork) -> str:
    """A hash of the module's structure: each submodule's path and class, each parameter's
    and buffer's name and shape, and the init. A change of its code that keeps all of these
    (a stride, an activation in `forward`) goes unseen: give such a network another name."""
    module = _meta_module(network)
    modules = [(path, type(m).__name__) for path, m in module.named_modules()]
    tensors = [(key, tuple(t.shape)) for key, t in [*module.named_parameters(), *module.named_buffers()]]
    return hashlib.sha256(json.dumps([modules, tensors, network.init]).encode()).hexdigest()[:16]


@functools.cache
def _meta_module(network: CustomNetwork) -> nn.Module:
    with torch.device("meta"):
        return network.make()


@functools.cache
def _blueprint(name: str, arch: Architecture | CustomNetwork) -> Network | ModuleStack:
    """One member of network `name` on the meta device: its shapes, no memory. Cached by
    architecture too, so a network registered again under the same name is built anew."""
    with torch.device("meta"):
        return stacked(name)


def blueprint(name: str) -> Network | ModuleStack:
    """One member of network `name` to read shapes off (on the meta device: no values)."""
    return _blueprint(name, architecture(name))


def parameter_shapes(name: str) -> dict[str, torch.Size]:
    """One member's shapes, named as its State names them (a ModuleStack's buffers too)."""
    return {key: t.shape[1:] for key, t in blueprint(name).member_tensors().items()}


def weight_shapes(name: str) -> dict[str, torch.Size]:
    """The shape of one member's prunable weight in each layer of network `name`, by layer name."""
    return {layer: weight.shape[1:] for layer, weight in blueprint(name).prunable().items()}


def count_prunable(name: str) -> dict[str, int]:
    """Prunable weights per layer of one member of network `name`."""
    return {layer: shape.numel() for layer, shape in weight_shapes(name).items()}


def weight_names(name: str) -> dict[str, str]:
    """Each prunable layer's weight's name in a State of network `name`, by layer name."""
    return blueprint(name).weight_names


def layer_weights(name: str, state: State) -> State:
    """The prunable weights of a member state of network `name`, by layer name."""
    return {layer: state[key] for layer, key in weight_names(name).items()}


def layer_multiply_adds(name: str) -> dict[str, int]:
    """Multiply-adds of one forward pass of one example through each weight layer of
    network `name` (dense, biases left out), counted on the meta device: a measure of its
    training's cost."""
    counts = {}
    if isinstance(architecture(name), CustomNetwork):
        network = _meta_module(architecture(name)).eval()
        weighted = {layer: network.get_submodule(layer) for layer in weight_names(name)}
        per_output = {layer: module.weight[0].numel() for layer, module in weighted.items()}
        inputs = torch.zeros(1, *network_input(name), device="meta")
    else:
        network = blueprint(name)
        weighted = {
            layer: module for layer, module in network.layers.items() if not isinstance(module, StackedPool)
        }
        per_output = {layer: module.weight[0, 0].numel() for layer, module in weighted.items()}
        inputs = torch.zeros(1, 1, *network_input(name), device="meta")

    def counter(layer: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            # each output value (one member, one example) takes a multiply-add per weight of its filter or row
            counts[layer] = output.numel() * per_output[layer]

        return count

    hooks = [module.register_forward_hook(counter(layer)) for layer, module in weighted.items()]
    try:
        network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {layer: counts[layer] for layer in weighted}


def network_input(name: str) -> tuple[int, ...]:
    """The shape of one example network `name` takes."""
    return architecture(name).input_shape


def multiply_adds(name: str) -> int:
    """Multiply-adds of one forward pass of one example through network `name`
    (`layer_multiply_adds`, summed)."""
    return sum(layer_multiply_adds(name).values())


def initial_state(name: str, seed: int) -> State:
    """One member of network `name`'s initial parameters (and buffers) from `seed`: the
    paper's Gaussian Glorot init (`glorot_init`), or a CustomNetwork's own with
    init="module" (torch's generator seeded from `seed`, restored afterwards)."""
    network = architecture(name)
    if isinstance(network, CustomNetwork) and network.init == "module":
        return _built_state(network, derive_seed(seed, "init"))
    return glorot_init(name, seed)


def glorot_init(name: str, seed: int) -> State:
    """One member of network `name`'s initial parameters: Xavier-normal weights of every
    prunable layer, zero biases, from `seed`. A CustomNetwork's other parameters and
    buffers (batch normalisation's) are as its module makes them."""
    shapes, g = parameter_shapes(name), generator(seed, "init")
    weights = set(weight_names(name).values())
    custom = isinstance(architecture(name), CustomNetwork)
    made = _default_state(architecture(name)) if custom else {}
    state = {}
    for key, shape in shapes.items():
        if key in weights:
            receptive = shape[2:].numel() if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            state[key] = torch.randn(shape, generator=g) * std
        elif custom and not _is_bias(architecture(name), key):
            state[key] = made[key].clone()
        else:
            state[key] = torch.zeros(shape)
    return state


def _is_bias(network: CustomNetwork, key: str) -> bool:
    """Whether `key` is the bias of a prunable layer."""
    path, _, last = key.rpartition(".")
    return last == "bias" and path in layer_kinds(network)


@functools.cache
def _default_state(network: CustomNetwork) -> State:
    """The values a CustomNetwork's module gives its tensors that do not depend on a draw
    (batch normalisation's scale 1, shift 0 and statistics), from one build on the CPU
    under a fixed seed."""
    return _built_state(network, 0)


def _built_state(network: CustomNetwork, seed: int) -> State:
    """The state of one module `network` builds on the CPU with torch's generator seeded
    with `seed` (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = network.make()
    return {key: t.detach().clone() for key, t in module.state_dict().items()}


def plain_network(name: str) -> nn.Module:
    """One member of network `name` as an unpruned plain module (PyTorch's default init):
    a CustomNetwork's own module; for an Architecture an `nn.Sequential` of 'same'
    convolutions with ReLU and max pools, a flatten in the (channel, height, width) order
    `Network.forward` uses, then linear layers with ReLU between them."""
    arch, shapes = architecture(name), parameter_shapes(name)
    if isinstance(arch, CustomNetwork):
        return arch.make()
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
