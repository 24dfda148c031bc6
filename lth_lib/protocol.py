"""The paper's protocol in one place: each network as Frankle & Carbin train and prune it,
the hyperparameters an experiment is made of, and the scales the notebooks run at.

Everything else reads this module: `models` builds a network from its `Architecture`,
`lottery` trains and prunes by an `Experiment`'s fields, the notebooks and `regenerate`
ask for `scaled_experiment(network, scale)` at `default_scale()`. Values come from
../shared/PAPER.md (the paper's Figure 2 table and Sections 2-3); where this project
deviates, the deviation is written next to the value.

`NETWORKS` is the registry of networks: one `NetworkProtocol` entry each, holding its
architecture (the layers `models` builds), how the paper trains and prunes it, and what
each scale cuts down. A new network is one new entry; nothing else names networks.

Scales:
- `smoke`: seconds per notebook; for tests and nbval.
- `cpu`: the README's default without a GPU, on 2 cores. The paper's protocol with fewer
  iterations (LeNet 5K of 50K; Conv 300/200 of 20K-30K), rounds (LeNet 12, to 7%;
  Conv-2/4/6 3/2/1) and trials (2 LeNet, 1 Conv; 1 control network per ticket), and
  validation/test metrics on random subsets (2,000 examples of each for LeNet, 500 for
  Conv) instead of all 5,000/10,000.
- `paper`: the protocol itself; for a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

STRATEGIES = ("iterative", "oneshot")
OPTIMIZERS = ("adam", "sgd")
LR_DROP = 0.1  # the factor of each learning-rate drop (`TrainingHparams.lr_drops`)
SCOPES = ("layer", "global")
CONTROLS = ("reinit", "random_prune")  # the paper's controls, trained beside iterative tickets
# The arithmetic a network trains and is evaluated in (`train.kernels`): float32, the paper's
# (cuDNN held to deterministic float32 kernels); tf32, CUDA's TensorFloat-32 for convolutions
# and matrix products (10-bit mantissa inputs, float32 accumulation; on a CPU the same as
# float32); bf16, autocast to bfloat16 for them (float32 weights, optimiser and loss).
PRECISIONS = ("float32", "tf32", "bf16")

# Adam as the paper uses it: PyTorch's (and TensorFlow's) default betas and epsilon, no
# weight decay, a constant learning rate (no schedule, no warm-up).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
VALIDATION_EXAMPLES = 5000  # held out of each training set at random, per trial
TEST_EXAMPLES = 10_000  # the test set of MNIST and of CIFAR-10
# The dropout figure (Section 3, Appendix H.5): rate 0.5, three times the iterations, the
# learning rates in `dropout_lr`, the same pruning rates. The paper does not say which layers
# drop units; here the hidden fully connected layers' outputs do (as in Srivastava et al.
# 2014's convolutional networks), a choice, not the paper's statement.
DROPOUT = 0.5
DROPOUT_ITERATIONS = 3  # times the iterations without dropout

# Late rewinding and stability (Frankle et al. 2020, Linear Mode Connectivity and the LTH):
# tickets rewound to iteration k instead of 0, for k at these fractions of training (k = 0
# is this paper's procedure); from the weights at k, two copies trained on different data
# orders; their test error at this many evenly spaced points on the line between them. The
# instability is the largest error on the line minus the mean of the two ends' errors; the
# paper calls a network stable below 2%.
REWIND_FRACTIONS = (0.0, 0.02, 0.1)
INTERPOLATION_POINTS = 30
STABLE_BELOW = 0.02


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


@dataclass(frozen=True)
class Conv:
    """A convolution with 'same' padding (an odd square kernel), then ReLU."""

    channels: int
    kernel: int = 3


@dataclass(frozen=True)
class Pool:
    """Max pooling over `size` x `size` windows with stride `size`."""

    size: int = 2


@dataclass(frozen=True)
class Dense:
    """A fully connected layer, then ReLU (and dropout when training with it), except for
    the output layer, the last one."""

    features: int


LAYER_PREFIXES = {Conv: "conv", Pool: "pool", Dense: "fc"}  # layer names: conv1, pool1, fc1, ...


@dataclass(frozen=True)
class Architecture:
    """A network's layers in order, as the paper's Figure 2 table gives them: convolutions
    and pools on an image, then fully connected layers, the last of them the output."""

    dataset: str  # "mnist" or "cifar10"
    input_shape: tuple[int, ...]  # (channels, height, width) for convolutions, else (features,)
    layers: tuple[Conv | Pool | Dense, ...]

    def __post_init__(self) -> None:
        kinds = [type(layer) for layer in self.layers]
        dense = kinds.index(Dense) if Dense in kinds else len(kinds)
        if dense == len(kinds) or any(kind is not Dense for kind in kinds[dense:]):
            raise ValueError(
                "an architecture ends with fully connected (Dense) layers, and has nothing after them"
            )
        if dense and len(self.input_shape) != 3:
            raise ValueError(
                f"convolutions need an input of (channels, height, width), got {self.input_shape}"
            )
        if any(isinstance(layer, Conv) and layer.kernel % 2 == 0 for layer in self.layers):
            raise ValueError("a 'same' convolution needs an odd kernel size")

    @property
    def named_layers(self) -> dict[str, Conv | Pool | Dense]:
        """Every layer by the name its parameters carry (`layers.<name>.weight`): conv1..,
        pool1.., fc1.. in order, numbered per kind."""
        named: dict[str, Conv | Pool | Dense] = {}
        for layer in self.layers:
            prefix = LAYER_PREFIXES[type(layer)]
            named[f"{prefix}{sum(name.startswith(prefix) for name in named) + 1}"] = layer
        return named

    @property
    def weight_layers(self) -> list[str]:
        """The names of the layers with weights, in order (what pruning masks cover)."""
        return [name for name, layer in self.named_layers.items() if not isinstance(layer, Pool)]

    @property
    def convolutional(self) -> bool:
        """Whether the network has convolutions."""
        return any(isinstance(layer, Conv) for layer in self.layers)


@dataclass(frozen=True)
class CustomNetwork:
    """A network given as a PyTorch module rather than a list of layers: the paper's
    Section 4 networks (`lth_lib.deeper`) and a user's own.

    `build()` makes one network: an `nn.Module` taking a batch [B, *input_shape] and
    returning logits [B, classes]; a "module:function" string names it for import. Its
    prunable layers are its `nn.Conv*` and `nn.Linear` modules, named by their paths in
    the module (`features.0`, `fc`); biases, batch normalisation and buffers are never
    pruned. The last `nn.Linear` is the output layer.

    `init`: "glorot", the paper's Gaussian Glorot weights and zero biases (other
    parameters and buffers as `build` makes them); "module", the module's own
    initialisation, drawn with torch's generator seeded from the trial's seed."""

    dataset: str  # "mnist" or "cifar10"
    input_shape: tuple[int, ...]  # (channels, height, width), or (features,)
    build: Callable[[], object] | str
    init: str = "glorot"

    def __post_init__(self) -> None:
        _choice("init", self.init, INITS)

    def make(self):
        """One freshly built module (`build()`)."""
        build = self.build
        if isinstance(build, str):
            module, _, name = build.partition(":")
            build = getattr(importlib.import_module(module), name)
        return build()

    @property
    def convolutional(self) -> bool:
        """Whether the network has convolutions."""
        return "conv" in _layer_kinds(self).values()

    @property
    def weight_layers(self) -> list[str]:
        """The names of the layers with prunable weights, in order."""
        return list(_layer_kinds(self))

    def fingerprint(self) -> str:
        """A hash of the module's structure (`models.module_fingerprint`) and init: part of
        an experiment's identity, so a changed module is not served another's stored results."""
        from lth_lib.models import module_fingerprint

        return module_fingerprint(self)


INITS = ("glorot", "module")


def _layer_kinds(network: Architecture | CustomNetwork) -> dict[str, str]:
    """Each prunable layer's kind, "conv" or "fc", by name, in order."""
    if isinstance(network, Architecture):
        return {name: "conv" if isinstance(layer, Conv) else "fc" for name, layer in network.named_layers.items()
                if not isinstance(layer, Pool)}  # fmt: skip
    from lth_lib.models import layer_kinds

    return layer_kinds(network)


@dataclass(frozen=True, kw_only=True)
class NetworkProtocol:
    """One network as the paper trains and prunes it, and what each scale cuts down."""

    architecture: Architecture | CustomNetwork
    iterations: int  # training iterations per round (the paper: 50K LeNet, 20K/25K/30K Conv-2/4/6)
    lr: float  # the learning rate (Adam's, constant, for the paper's Section 2-3 networks)
    conv_rate: float = 0.0  # fraction of the remaining conv weights pruned per round (0: no conv layers)
    fc_rate: float = 0.2  # same, fully connected layers; the output layer at `output_rate(fc_rate)`
    dropout_lr: float | None = None  # the learning rate with dropout (None: not in the dropout figure)
    batch_size: int = 60
    eval_every: int = 100  # validation and test metrics on all 5,000 / 10,000 examples this often
    scope: str = "layer"  # each layer at its own rate; biases are never pruned, no layer is left out
    rounds: int = 20  # pruning rounds (LeNet: 20 rounds keep 1.2% of the weights)
    trials: int = 5  # winning tickets per level, each from its own seed
    control_trials: int = 3  # random reinitialisations (and random prunings) per ticket
    # Section 4's training and pruning (`TrainingHparams`, `PruningHparams`); the defaults are
    # the Section 2-3 protocol's
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_drops: tuple[int, ...] = ()
    augment: bool = False
    unpruned: tuple[str, ...] = ()
    warmup: tuple[float, int] | None = None  # the learning rate that warm-up makes work, and its iterations
    # Deviation: the precision it trains in on a GPU (`PRECISIONS`; a CPU trains in float32 always;
    # `lottery.run(precision=...)` overrides it). Every level records the precision it trained in.
    gpu_precision: str = "float32"
    # Where test metrics are computed on a GPU (`train.train`'s `test_every`): None at every
    # evaluation point; else every this many iterations and wherever a network's validation
    # loss reaches a new minimum (so the early-stop numbers are those of evaluating everything).
    gpu_test_every: int | None = None
    # Per scale other than `paper`: what differs from the above (any field of an Experiment
    # and its parts, as `paper_experiment` takes them).
    scales: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def output_rate(fc_rate: float) -> float:
    """The output layer's per-round rate: half the fully connected rate (the paper)."""
    return fc_rate / 2


SCALES = ("smoke", "cpu", "paper")
DATASETS = ("mnist", "cifar10")
SCALE_ENV = "LTH_SCALE"
_CIFAR = {"dataset": "cifar10", "input_shape": (3, 32, 32)}
_CONV_FC = (Dense(256), Dense(256), Dense(10))
_CONV_SMOKE = {
    "iterations": 4,
    "eval_every": 2,
    "eval_examples": 60,
    "rounds": 1,
    "trials": 1,
    "control_trials": 1,
}
# Section 4's smoke scale is a wiring test: a batch of 8 rather than the protocol's 64 or 128
_DEEP_SMOKE = {
    "iterations": 2, "eval_every": 1, "eval_examples": 20, "batch_size": 8, "rounds": 1, "trials": 1,
    "control_trials": 1,
}  # fmt: skip
# Deviation (README, Deviations): Conv-2/4/6 train in TF32 on a GPU. In strict float32 a paper-scale
# Conv-2 level took about 50 minutes of an H100 (35 networks stacked: 79.7 ms a step; TF32 21.7 ms,
# benchmarks/results-nvidia-h100.md). `scripts/device-job` checks it first on each GPU it gets:
# Conv-2's dense level (5 trials, full length) in TF32 beside the committed float32 one
# (`lth_lib.precision`); where they disagree, the slot trains in float32.
_CONV_GPU_PRECISION = "tf32"
# On a GPU, Conv-2/4/6 compute test metrics (10,000 examples, twice the validation set) only
# every 1,000 iterations and where a network's validation loss reaches a new minimum, not at
# every evaluation point: evaluation cost as much as training. Validation, the early-stop
# criterion, is still evaluated every 100 iterations, and the early-stop numbers are the
# same (tests/test_train.py); the figures' test curves have points every 1,000 iterations
# and at those minima.
_CONV_GPU_TEST_EVERY = 1000
NETWORKS: dict[str, NetworkProtocol] = {
    "lenet300": NetworkProtocol(
        architecture=Architecture(dataset="mnist", input_shape=(784,), layers=(Dense(300), Dense(100), Dense(10))),
        iterations=50_000, lr=1.2e-3,
        scales={
            "smoke": {"iterations": 60, "eval_every": 20, "eval_examples": 500, "rounds": 2, "trials": 1, "control_trials": 1},
            "cpu": {"iterations": 5000, "eval_every": 100, "eval_examples": 2000, "rounds": 12, "trials": 2, "control_trials": 1},
        },
    ),
    "conv2": NetworkProtocol(
        architecture=Architecture(**_CIFAR, layers=(Conv(64), Conv(64), Pool(), *_CONV_FC)),
        iterations=20_000, lr=2e-4, conv_rate=0.1, dropout_lr=3e-4,
        gpu_precision=_CONV_GPU_PRECISION, gpu_test_every=_CONV_GPU_TEST_EVERY,
        scales={
            "smoke": _CONV_SMOKE,
            "cpu": {"iterations": 300, "eval_every": 50, "eval_examples": 500, "rounds": 3, "trials": 1, "control_trials": 1},
        },
    ),
    "conv4": NetworkProtocol(
        architecture=Architecture(**_CIFAR, layers=(Conv(64), Conv(64), Pool(), Conv(128), Conv(128), Pool(), *_CONV_FC)),
        iterations=25_000, lr=3e-4, conv_rate=0.1, dropout_lr=2e-4,
        gpu_precision=_CONV_GPU_PRECISION, gpu_test_every=_CONV_GPU_TEST_EVERY,
        scales={
            "smoke": _CONV_SMOKE,
            "cpu": {"iterations": 200, "eval_every": 50, "eval_examples": 500, "rounds": 2, "trials": 1, "control_trials": 1},
        },
    ),
    "conv6": NetworkProtocol(
        architecture=Architecture(
            **_CIFAR,
            layers=(Conv(64), Conv(64), Pool(), Conv(128), Conv(128), Pool(), Conv(256), Conv(256), Pool(), *_CONV_FC),
        ),
        iterations=30_000, lr=3e-4, conv_rate=0.15, dropout_lr=2e-4,
        gpu_precision=_CONV_GPU_PRECISION, gpu_test_every=_CONV_GPU_TEST_EVERY,
        scales={
            "smoke": _CONV_SMOKE,
            "cpu": {"iterations": 200, "eval_every": 50, "eval_examples": 500, "rounds": 1, "trials": 1, "control_trials": 1},
        },
    ),
    # Section 4 (Figure 2 table, Section 4 and Appendix I of arXiv 1803.03635v5; lth_lib.deeper has
    # the architectures). SGD with momentum 0.9 and weight decay 1e-4 (App. I.2, I.3), lr 0.1 dropped
    # tenfold twice ("SGD 0.1-0.01-0.001"); random flips and 4-pixel pads and crops (I.3, "the same
    # data augmentation" for VGG, I.2); 45,000 training and 5,000 validation examples, as here
    # everywhere; Gaussian Glorot init. Convolutions pruned globally at 20% per round, the output
    # layer (and ResNet's downsampling 1x1 convolutions) not at all (I.2, I.3; the table's "conv
    # 20%, fc 0%"). Warm-up: linear from 0 over k iterations (Section 4); it lets VGG-19 train its
    # tickets at lr 0.1 (k = 10K) and ResNet at 0.03 (k = 20K; I.5). Not given by the paper here,
    # chosen: 5 trials and 1 reinitialisation per ticket, 20 rounds (1.2% of the conv weights),
    # validation and test every 1,000 iterations (Section 4 reads accuracy at fixed iterations).
    "vgg19": NetworkProtocol(
        architecture=CustomNetwork(**_CIFAR, build="lth_lib.deeper:vgg19"),
        iterations=112_480, lr=0.1, batch_size=64, conv_rate=0.2, scope="global", unpruned=("fc",),
        optimizer="sgd", momentum=0.9, weight_decay=1e-4, lr_drops=(56_240, 84_360), augment=True,
        warmup=(0.1, 10_000), eval_every=1000, control_trials=1,
        # 160 epochs of 703 batches (112,480 iterations, I.2), drops after epochs 80 and 120
        scales={
            "smoke": _DEEP_SMOKE,
            "cpu": {"iterations": 60, "eval_every": 20, "eval_examples": 500, "rounds": 2, "trials": 1, "control_trials": 1},
        },
    ),
    "resnet20": NetworkProtocol(
        architecture=CustomNetwork(**_CIFAR, build="lth_lib.deeper:resnet20"),
        iterations=30_000, lr=0.1, batch_size=128, conv_rate=0.2, scope="global",
        unpruned=("blocks.3.shortcut.0", "blocks.6.shortcut.0", "fc"),
        optimizer="sgd", momentum=0.9, weight_decay=1e-4, lr_drops=(20_000, 25_000), augment=True,
        warmup=(0.03, 20_000), eval_every=1000, control_trials=1,
        scales={
            "smoke": _DEEP_SMOKE,
            "cpu": {"iterations": 200, "eval_every": 50, "eval_examples": 500, "rounds": 2, "trials": 1, "control_trials": 1},
        },
    ),
}  # fmt: skip


def register_network(name: str, protocol: NetworkProtocol, replace: bool = False) -> None:
    """Add network `name` to `NETWORKS` (a user's own network: `CustomNetwork`), so that
    `paper_experiment(name, ...)`, `run`, the figures and `export_ticket` take it. A name
    already registered is refused unless `replace`. The registry lives in this process:
    a cluster job (a fresh process) knows only the networks `lth_lib` itself registers."""
    if not isinstance(protocol, NetworkProtocol):
        raise TypeError(f"a network is registered with a NetworkProtocol, got {type(protocol).__name__}")
    if name in NETWORKS and not replace:
        raise ValueError(f"network {name!r} is registered already; pass replace=True to replace it")
    if protocol.architecture.dataset not in DATASETS:
        raise ValueError(
            f"unknown data set {protocol.architecture.dataset!r}; choose one of: {', '.join(DATASETS)}"
        )
    NETWORKS[name] = protocol


def network_protocol(name: str) -> NetworkProtocol:
    """The protocol of network `name`; an unknown name is an error listing the known ones."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]


def architecture(name: str) -> Architecture | CustomNetwork:
    """The layers of network `name` (or its module)."""
    return network_protocol(name).architecture


def training_precision(network: str, device_type: str, precision: str | None = None) -> str:
    """The precision `network` trains in on a device of `device_type` ("cpu", "cuda"):
    `precision` if given, else float32 on a CPU and the protocol's `gpu_precision` on a GPU."""
    chosen = precision or (network_protocol(network).gpu_precision if device_type == "cuda" else "float32")
    _choice("precision", chosen, PRECISIONS)
    return chosen


def evaluation_grid(network: str, device_type: str, test_every: int | None = None) -> int | None:
    """Every how many iterations `network` computes test metrics on a device of
    `device_type` besides where its validation loss reaches a new minimum (`train.train`'s
    `test_every`; None: at every evaluation point): `test_every` if given, else None on a
    CPU and the protocol's `gpu_test_every` on a GPU."""
    if test_every is not None:
        if test_every <= 0:
            raise ValueError(f"test_every must be positive, got {test_every}")
        return test_every
    return network_protocol(network).gpu_test_every if device_type == "cuda" else None


def check_scale(scale: str) -> str:
    """`scale` if it is known, else a clear error listing the scales."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return scale


def default_scale() -> str:
    """The scale used when none is given, by notebooks and `regenerate` alike: $LTH_SCALE
    if set, else `paper` where a GPU is present, else `cpu`."""
    if os.environ.get(SCALE_ENV):
        return check_scale(os.environ[SCALE_ENV])
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def check_rate(rate: float, what: str = "pruning rate") -> None:
    """Raise unless 0 < rate < 1."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {rate}")


# The dataclasses' defaults are the baseline an experiment's identity is hashed against
# (only fields that differ from them are hashed), not the protocol: NETWORKS holds that.
# Changing a default renames stored experiments; tests/test_protocol.py pins identities.


@dataclass(frozen=True)
class TrainingHparams:
    """How one network is trained."""

    iterations: int  # optimiser steps
    lr: float  # the learning rate (after warm-up, before any drop)
    batch_size: int = 60
    eval_every: int = 100  # evaluate validation and test every this many iterations
    eval_examples: int | None = None  # evaluate on a random subset this big (None: all)
    dropout: float = 0.0  # dropout rate on the hidden fully connected layers' outputs
    optimizer: str = "adam"  # "adam" (ADAM_BETAS, ADAM_EPS) or "sgd" (with `momentum`)
    momentum: float = 0.0  # SGD's momentum (heavy ball, as torch.optim.SGD)
    weight_decay: float = 0.0  # L2 penalty on every parameter, added to its gradient (SGD)
    lr_drops: tuple[int, ...] = ()  # iterations at which the learning rate is multiplied by LR_DROP
    warmup: int = 0  # iterations of linear warm-up: step t (from 0) at lr * min(1, (t + 1) / warmup)
    augment: bool = False  # random crops (4 pixels of zero padding) and horizontal flips (`data.Augment`)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0:
            raise ValueError(
                f"need 0 <= momentum < 1 and weight_decay >= 0, got {self.momentum}, {self.weight_decay}"
            )
        if self.optimizer == "adam" and (self.momentum or self.weight_decay):
            raise ValueError("momentum and weight_decay are SGD's: Adam runs as the paper's, without them")
        if list(self.lr_drops) != sorted(set(self.lr_drops)) or any(
            not 0 < d < self.iterations for d in self.lr_drops
        ):
            raise ValueError(
                f"lr_drops must be increasing iterations in (0, {self.iterations}), got {self.lr_drops}"
            )
        if self.warmup < 0:
            raise ValueError(f"warmup must be non-negative, got {self.warmup}")
        if self.eval_examples is not None and self.eval_examples <= 0:
            raise ValueError(f"eval_examples must be positive or None, got {self.eval_examples}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class PruningHparams:
    """How tickets are found. `rounds` is the number of pruning rounds (iterative), or
    the one-shot levels 1..rounds, each pruned once to that round's per-layer counts."""

    strategy: str = "iterative"  # "iterative" or "oneshot"
    rounds: int = 5
    scope: str = "layer"  # "layer": per-layer rates; "global": one threshold at fc_rate
    conv_rate: float = 0.1  # fraction of the remaining conv weights pruned per round
    fc_rate: float = 0.2  # same, fully connected layers
    output_rate: float = 0.1  # same, output layer (`paper_experiment`: `output_rate(fc_rate)`)
    rewind_iteration: int = 0  # survivors reset to their weights at this iteration
    unpruned: tuple[str, ...] = ()  # layers left out of pruning (Section 4: the output layer)

    def __post_init__(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("scope", self.scope, SCOPES)
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        for name in ("conv_rate", "fc_rate", "output_rate"):
            check_rate(getattr(self, name), name)
        if self.rewind_iteration < 0:
            raise ValueError(f"rewind_iteration must be non-negative, got {self.rewind_iteration}")


@dataclass(frozen=True)
class Experiment:
    """Everything that determines an experiment's numbers; `identity()` names it."""

    network: str
    training: TrainingHparams
    pruning: PruningHparams = field(default_factory=PruningHparams)
    trials: int = 1  # trial t uses seed + t for init, validation split and data order
    seed: int = 0
    controls: tuple[str, ...] = ()  # any of "reinit", "random_prune"
    control_trials: int = 1  # control networks per ticket and control (the paper: 3 reinits)
    data_copy: str = ""  # which copy of the data set (see `lth_lib.data.data_copy`)

    def __post_init__(self) -> None:
        convolutional = architecture(self.network).convolutional
        if self.trials < 1 or self.control_trials < 1:
            raise ValueError("trials and control_trials must be at least 1")
        for control in self.controls:
            _choice("control", control, CONTROLS)
        if self.pruning.rewind_iteration >= self.training.iterations:
            raise ValueError(
                f"rewind_iteration ({self.pruning.rewind_iteration}) must be below "
                f"iterations ({self.training.iterations})"
            )
        if not convolutional and self.pruning.conv_rate != PruningHparams.conv_rate:
            raise ValueError(f"{self.network} has no conv layers: leave conv_rate at its default")
        layers = architecture(self.network).weight_layers
        if set(self.pruning.unpruned) - set(layers) or len(set(self.pruning.unpruned)) == len(layers):
            raise ValueError(
                f"unpruned names layers of {self.network} to leave out, not all of them ({', '.join(layers)}); "
                f"got {self.pruning.unpruned}"
            )
        if self.training.augment and architecture(self.network).dataset != "cifar10":
            raise ValueError("augment crops and flips images: CIFAR-10 networks only")

    @property
    def seeds(self) -> list[int]:
        """One seed per trial."""
        return [self.seed + t for t in range(self.trials)]

    @property
    def rates(self) -> dict[str, float]:
        """Per-layer pruning rates: conv layers at conv_rate, the output layer (the last) at
        output_rate, the other fully connected layers at fc_rate; 0 for the layers left out."""
        p, kinds = self.pruning, _layer_kinds(architecture(self.network))
        output = list(kinds)[-1]
        return {
            name: 0.0 if name in p.unpruned
            else p.conv_rate if kind == "conv" else p.output_rate if name == output else p.fc_rate
            for name, kind in kinds.items()
        }  # fmt: skip

    @property
    def folder_name(self) -> str:
        """The name of the folder that holds its levels, in any store."""
        return f"{self.network}-{self.pruning.strategy}-{self.identity()}"

    def to_dict(self) -> dict:
        """The experiment as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> Experiment:
        """The experiment `to_dict` gave."""
        fields = dict(fields)
        training, pruning = fields.pop("training"), fields.pop("pruning")
        training = TrainingHparams(**{**training, "lr_drops": tuple(training.get("lr_drops", ()))})
        pruning = PruningHparams(**{**pruning, "unpruned": tuple(pruning.get("unpruned", ()))})
        return cls(training=training, pruning=pruning, **{**fields, "controls": tuple(fields["controls"])})

    def identity(self) -> str:
        """A stable hash of the fields that differ from their defaults.

        A field added later with a no-op default leaves existing identities unchanged.
        """
        named = _non_default(self)
        network = architecture(self.network)
        if isinstance(network, CustomNetwork):
            named["module"] = network.fingerprint()
        return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16]


# Every field an experiment can be given by name (`paper_experiment`, notebook and
# command-line parameters), and the part of the experiment it belongs to.
PARAMETERS: dict[str, str] = {
    **{f.name: "training" for f in dataclasses.fields(TrainingHparams)},
    **{f.name: "pruning" for f in dataclasses.fields(PruningHparams)},
    **{
        f.name: "experiment"
        for f in dataclasses.fields(Experiment)
        if f.name not in ("network", "training", "pruning")
    },
}
_TYPES = {
    "int": (int,),
    "bool": (bool,),
    "float": (float, int),
    "tuple[int, ...]": (tuple,),
    "int | None": (int, type(None)),
    "str": (str,),
    "tuple[str, ...]": (tuple,),
}
_FIELD_TYPES = {
    f.name: f.type for cls in (TrainingHparams, PruningHparams, Experiment) for f in dataclasses.fields(cls)
}


def check_parameters(values: Mapping[str, object]) -> None:
    """A clear error for a name that is no field of an experiment (ValueError), or a value
    of the wrong type (TypeError); the dataclasses check the values' ranges when the
    experiment is made."""
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown experiment parameter {unknown[0]!r}; known: {', '.join(sorted(PARAMETERS))}"
        )
    for name, value in values.items():
        kinds = _TYPES[_FIELD_TYPES[name]]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise TypeError(f"{name} must be {wanted}, got {value!r}")


SECTION4_TRAINING = ("optimizer", "momentum", "weight_decay", "lr_drops", "augment")


def paper_experiment(network: str, **overrides) -> Experiment:
    """The paper's training and pruning of `network` (one trial unless told; the paper's
    full experiment is `scaled_experiment(network, "paper")`). `overrides` may name any
    field of Experiment, TrainingHparams or PruningHparams (`PARAMETERS`, e.g.
    iterations=1000, rounds=3, dropout=0.5). With dropout the learning rate and iterations
    are the dropout figure's, and the output layer's rate follows the fc rate after
    overrides, unless they are given."""
    protocol = network_protocol(network)
    check_parameters(overrides)
    dropout = overrides.get("dropout", 0.0)
    sections: dict[str, dict] = {
        "training": {
            "iterations": protocol.iterations * (DROPOUT_ITERATIONS if dropout else 1),
            "lr": protocol.dropout_lr if dropout and protocol.dropout_lr else protocol.lr,
            "batch_size": protocol.batch_size,
            "eval_every": protocol.eval_every,
            **{name: getattr(protocol, name) for name in SECTION4_TRAINING},
        },
        "pruning": {"fc_rate": protocol.fc_rate, "scope": protocol.scope, "unpruned": protocol.unpruned},
        "experiment": {},
    }
    if protocol.architecture.convolutional:
        sections["pruning"]["conv_rate"] = protocol.conv_rate
    for key, value in overrides.items():
        sections[PARAMETERS[key]][key] = value
    training = sections["training"]
    if "lr_drops" not in overrides:  # the drops keep their share of training
        training["lr_drops"] = scaled_iterations(
            protocol.lr_drops, training["iterations"], protocol.iterations
        )
    pruning = sections["pruning"]
    pruning.setdefault("output_rate", output_rate(pruning["fc_rate"]))
    return Experiment(
        network, TrainingHparams(**sections["training"]), PruningHparams(**pruning), **sections["experiment"]
    )


def scaled_iterations(points: tuple[int, ...], iterations: int, paper_iterations: int) -> tuple[int, ...]:
    """Iterations `points` of the paper's `paper_iterations`, at the same shares of
    `iterations` (rounded; those that fall at 0 or the end, or twice, dropped)."""
    scaled = (round(point * iterations / paper_iterations) for point in points)
    return tuple(sorted({point for point in scaled if 0 < point < iterations}))


def warmup_experiment(network: str, scale: str, **overrides) -> Experiment:
    """`scaled_experiment` with the paper's learning-rate warm-up for `network` (Section 4):
    its higher learning rate, warmed up over the same share of training as the paper's k."""
    protocol = network_protocol(network)
    if protocol.warmup is None:
        raise ValueError(f"the paper gives no warm-up for {network}")
    lr, iterations = protocol.warmup
    plain = scaled_experiment(network, scale, **overrides)
    warmup = max(1, round(iterations * plain.training.iterations / protocol.iterations))
    return scaled_experiment(network, scale, **{"lr": lr, "warmup": warmup, **overrides})


def scaled_experiment(network: str, scale: str, **overrides) -> Experiment:
    """The paper's experiment for `network` (its rounds, trials and control networks) at
    `scale`; `overrides` win."""
    protocol = network_protocol(network)
    if check_scale(scale) != "paper" and scale not in protocol.scales:
        raise ValueError(
            f"network {network!r} has no settings for scale {scale!r} (its NetworkProtocol's `scales`)"
        )
    paper = {"rounds": protocol.rounds, "trials": protocol.trials, "control_trials": protocol.control_trials}
    return paper_experiment(network, **{**paper, **protocol.scales.get(scale, {}), **overrides})


def rewind_points(iterations: int) -> list[int]:
    """The iterations k at the `REWIND_FRACTIONS` of `iterations` of training (0 first; at
    least 1 where the fraction is not 0): where the rewinding notebook rewinds to, and
    where a dense network's training keeps its weights for it (`lth_lib.store.DenseStore`)."""
    return sorted({max(1, round(f * iterations)) if f else 0 for f in REWIND_FRACTIONS})


def default_rewind_iterations(network: str, scale: str) -> list[int]:
    """The iterations k the rewinding notebook rewinds `network` to at `scale`."""
    return rewind_points(scaled_experiment(network, scale).training.iterations)


def _non_default(obj) -> dict:
    """Fields of a (nested) dataclass that differ from their defaults."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _non_default(value)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out[f.name] = value
        elif value != (f.default if f.default is not dataclasses.MISSING else f.default_factory()):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
