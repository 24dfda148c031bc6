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
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

STRATEGIES = ("iterative", "oneshot")
SCOPES = ("layer", "global")
CONTROLS = ("reinit", "random_prune")  # the paper's controls, trained beside iterative tickets

# Adam as the paper uses it: PyTorch's (and TensorFlow's) default betas and epsilon, no
# weight decay, a constant learning rate (no schedule, no warm-up).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
VALIDATION_EXAMPLES = 5000  # held out of each training set at random, per trial
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


@dataclass(frozen=True, kw_only=True)
class NetworkProtocol:
    """One network as the paper trains and prunes it, and what each scale cuts down."""

    architecture: Architecture
    iterations: int  # training iterations per round (the paper: 50K LeNet, 20K/25K/30K Conv-2/4/6)
    lr: float  # Adam's learning rate (constant)
    conv_rate: float = 0.0  # fraction of the remaining conv weights pruned per round (0: no conv layers)
    fc_rate: float = 0.2  # same, fully connected layers; the output layer at `output_rate(fc_rate)`
    dropout_lr: float | None = None  # the learning rate with dropout (None: not in the dropout figure)
    batch_size: int = 60
    eval_every: int = 100  # validation and test metrics on all 5,000 / 10,000 examples this often
    scope: str = "layer"  # each layer at its own rate; biases are never pruned, no layer is left out
    rounds: int = 20  # pruning rounds (LeNet: 20 rounds keep 1.2% of the weights)
    trials: int = 5  # winning tickets per level, each from its own seed
    control_trials: int = 3  # random reinitialisations (and random prunings) per ticket
    # Per scale other than `paper`: what differs from the above (any field of an Experiment
    # and its parts, as `paper_experiment` takes them).
    scales: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def output_rate(fc_rate: float) -> float:
    """The output layer's per-round rate: half the fully connected rate (the paper)."""
    return fc_rate / 2


SCALES = ("smoke", "cpu", "paper")
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
        scales={
            "smoke": _CONV_SMOKE,
            "cpu": {"iterations": 300, "eval_every": 50, "eval_examples": 500, "rounds": 3, "trials": 1, "control_trials": 1},
        },
    ),
    "conv4": NetworkProtocol(
        architecture=Architecture(**_CIFAR, layers=(Conv(64), Conv(64), Pool(), Conv(128), Conv(128), Pool(), *_CONV_FC)),
        iterations=25_000, lr=3e-4, conv_rate=0.1, dropout_lr=2e-4,
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
        scales={
            "smoke": _CONV_SMOKE,
            "cpu": {"iterations": 200, "eval_every": 50, "eval_examples": 500, "rounds": 1, "trials": 1, "control_trials": 1},
        },
    ),
}  # fmt: skip


def network_protocol(name: str) -> NetworkProtocol:
    """The protocol of network `name`; an unknown name is an error listing the known ones."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]


def architecture(name: str) -> Architecture:
    """The layers of network `name`."""
    return network_protocol(name).architecture


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
    lr: float  # Adam learning rate
    batch_size: int = 60
    eval_every: int = 100  # evaluate validation and test every this many iterations
    eval_examples: int | None = None  # evaluate on a random subset this big (None: all)
    dropout: float = 0.0  # dropout rate on the hidden fully connected layers' outputs

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
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

    @property
    def seeds(self) -> list[int]:
        """One seed per trial."""
        return [self.seed + t for t in range(self.trials)]

    @property
    def rates(self) -> dict[str, float]:
        """Per-layer pruning rates: conv layers at conv_rate, the output layer at
        output_rate, the other fully connected layers at fc_rate."""
        p, named = self.pruning, architecture(self.network).named_layers
        output = architecture(self.network).weight_layers[-1]
        return {
            name: p.conv_rate if isinstance(layer, Conv) else p.output_rate if name == output else p.fc_rate
            for name, layer in named.items()
            if not isinstance(layer, Pool)
        }

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
        training, pruning = TrainingHparams(**fields.pop("training")), PruningHparams(**fields.pop("pruning"))
        return cls(training=training, pruning=pruning, **{**fields, "controls": tuple(fields["controls"])})

    def identity(self) -> str:
        """A stable hash of the fields that differ from their defaults.

        A field added later with a no-op default leaves existing identities unchanged.
        """
        return hashlib.sha256(json.dumps(_non_default(self), sort_keys=True).encode()).hexdigest()[:16]


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
    "float": (float, int),
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
        if isinstance(value, bool) or not isinstance(value, kinds):
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise TypeError(f"{name} must be {wanted}, got {value!r}")


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
        },
        "pruning": {"fc_rate": protocol.fc_rate, "scope": protocol.scope},
        "experiment": {},
    }
    if protocol.architecture.convolutional:
        sections["pruning"]["conv_rate"] = protocol.conv_rate
    for key, value in overrides.items():
        sections[PARAMETERS[key]][key] = value
    pruning = sections["pruning"]
    pruning.setdefault("output_rate", output_rate(pruning["fc_rate"]))
    return Experiment(
        network, TrainingHparams(**sections["training"]), PruningHparams(**pruning), **sections["experiment"]
    )


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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


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
