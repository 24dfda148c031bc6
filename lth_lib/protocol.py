"""The paper's protocol in one place: each network as Frankle & Carbin train and prune it,
the hyperparameters an experiment is made of, and the scales the notebooks run at.

Everything else reads this module: `models` builds a network from its `Architecture`,
`lottery` trains and prunes by an `Experiment`'s fields, the notebooks and `regenerate`
ask for `scaled_experiment(network, scale)` at `default_scale()`. Values come from
../shared/PAPER.md (the paper's Figure 2 table and Sections 2-3); where this project
deviates, the deviation is written next to the value.

Scales:
- `smoke`: seconds per notebook; for tests and nbval.
- `cpu`: the README's default without a GPU; every notebook together in about an hour on
  2 cores. The paper's protocol with fewer iterations (LeNet 5K of 50K; Conv 300/200 of
  20K-30K), rounds (LeNet 12, to 7%; Conv-2/4/6 3/2/1) and trials (2 LeNet, 1 Conv; 1
  control network per ticket), and validation/test metrics on random subsets (2,000
  examples of each for LeNet, 500 for Conv) instead of all 5,000/10,000.
- `paper`: the protocol itself (PAPER below); for a GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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
class Architecture:
    """A network's layers, as the paper's Figure 2 table gives them."""

    dataset: str  # "mnist" or "cifar10"
    input_shape: tuple[int, ...]
    conv: tuple[int | str, ...]  # output channels of each 3x3 conv, "pool" for 2x2 max pool
    fc: tuple[int, ...]  # widths of the fully connected layers, the last is the output

    @property
    def layers(self) -> list[str]:
        """The weight layers' names in order: conv1..convN, then fc1..fcM (the output)."""
        convs = sum(1 for item in self.conv if item != "pool")
        return [f"conv{i}" for i in range(1, convs + 1)] + [f"fc{i}" for i in range(1, len(self.fc) + 1)]


@dataclass(frozen=True)
class NetworkProtocol:
    """One network as the paper trains and prunes it."""

    architecture: Architecture
    iterations: int  # training iterations per round (the paper: 50K LeNet, 20K/25K/30K Conv-2/4/6)
    lr: float  # Adam's learning rate (constant)
    conv_rate: float  # fraction of the remaining conv weights pruned per round (0: no conv layers)
    fc_rate: float = 0.2  # same, fully connected layers; the output layer at `output_rate(fc_rate)`
    dropout_lr: float | None = None  # the learning rate with dropout (None: not in the dropout figure)
    batch_size: int = 60
    eval_every: int = 100  # validation and test metrics on all 5,000 / 10,000 examples this often
    scope: str = "layer"  # each layer at its own rate; biases are never pruned, no layer is left out
    rounds: int = 20  # pruning rounds (LeNet: 20 rounds keep 1.2% of the weights)
    trials: int = 5  # winning tickets per level, each from its own seed
    control_trials: int = 3  # random reinitialisations (and random prunings) per ticket


def output_rate(fc_rate: float) -> float:
    """The output layer's per-round rate: half the fully connected rate (the paper)."""
    return fc_rate / 2


_CIFAR = ("cifar10", (3, 32, 32))
_CONV_FC = (256, 256, 10)
PAPER: dict[str, NetworkProtocol] = {
    "lenet300": NetworkProtocol(Architecture("mnist", (784,), (), (300, 100, 10)), 50_000, 1.2e-3, 0.0),
    "conv2": NetworkProtocol(Architecture(*_CIFAR, (64, 64, "pool"), _CONV_FC), 20_000, 2e-4, 0.1, dropout_lr=3e-4),
    "conv4": NetworkProtocol(
        Architecture(*_CIFAR, (64, 64, "pool", 128, 128, "pool"), _CONV_FC), 25_000, 3e-4, 0.1, dropout_lr=2e-4
    ),
    "conv6": NetworkProtocol(
        Architecture(*_CIFAR, (64, 64, "pool", 128, 128, "pool", 256, 256, "pool"), _CONV_FC), 30_000, 3e-4, 0.15,
        dropout_lr=2e-4,
    ),
}

# Per scale and network: what differs from PAPER (any field of Experiment and its parts).
SCALES: dict[str, dict[str, dict]] = {
    "smoke": {
        "lenet300": dict(iterations=60, eval_every=20, eval_examples=500, rounds=2, trials=1, control_trials=1),
        **{
            conv: dict(iterations=4, eval_every=2, eval_examples=60, rounds=1, trials=1, control_trials=1)
            for conv in ("conv2", "conv4", "conv6")
        },
    },
    "cpu": {
        "lenet300": dict(iterations=5000, eval_every=100, eval_examples=2000, rounds=12, trials=2, control_trials=1),
        "conv2": dict(iterations=300, eval_every=50, eval_examples=500, rounds=3, trials=1, control_trials=1),
        "conv4": dict(iterations=200, eval_every=50, eval_examples=500, rounds=2, trials=1, control_trials=1),
        "conv6": dict(iterations=200, eval_every=50, eval_examples=500, rounds=1, trials=1, control_trials=1),
    },
    "paper": {network: {} for network in PAPER},
}
SCALE_ENV = "LTH_SCALE"


def network_protocol(name: str) -> NetworkProtocol:
    """The protocol of network `name`; an unknown name is an error listing the known ones."""
    if name not in PAPER:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(sorted(PAPER))}")
    return PAPER[name]


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
# (only fields that differ from them are hashed), not the protocol: PAPER holds that.
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
        conv = architecture(self.network).conv
        if self.trials < 1 or self.control_trials < 1:
            raise ValueError("trials and control_trials must be at least 1")
        for control in self.controls:
            _choice("control", control, CONTROLS)
        if self.pruning.rewind_iteration >= self.training.iterations:
            raise ValueError(
                f"rewind_iteration ({self.pruning.rewind_iteration}) must be below "
                f"iterations ({self.training.iterations})"
            )
        if not conv and self.pruning.conv_rate != PruningHparams.conv_rate:
            raise ValueError(f"{self.network} has no conv layers: leave conv_rate at its default")

    @property
    def seeds(self) -> list[int]:
        """One seed per trial."""
        return [self.seed + t for t in range(self.trials)]

    @property
    def rates(self) -> dict[str, float]:
        """Per-layer pruning rates: conv layers at conv_rate, the output layer at
        output_rate, the other fully connected layers at fc_rate."""
        p, layers = self.pruning, architecture(self.network).layers
        return {
            layer: p.conv_rate if layer.startswith("conv") else p.output_rate if layer == layers[-1] else p.fc_rate
            for layer in layers
        }

    def to_dict(self) -> dict:
        """The experiment as plain JSON-ready data."""
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """A stable hash of the fields that differ from their defaults.

        A field added later with a no-op default leaves existing identities unchanged.
        """
        return hashlib.sha256(json.dumps(_non_default(self), sort_keys=True).encode()).hexdigest()[:16]


_SECTIONS = {
    **{f.name: "training" for f in dataclasses.fields(TrainingHparams)},
    **{f.name: "pruning" for f in dataclasses.fields(PruningHparams)},
    **{f.name: "experiment" for f in dataclasses.fields(Experiment) if f.name not in ("network", "training", "pruning")},
}


def paper_experiment(network: str, **overrides) -> Experiment:
    """The paper's training and pruning of `network` (one trial unless told; the paper's
    full experiment is `scaled_experiment(network, "paper")`). `overrides` may name any
    field of Experiment, TrainingHparams or PruningHparams (e.g. iterations=1000, rounds=3,
    dropout=0.5). With dropout the learning rate and iterations are the dropout figure's,
    and the output layer's rate follows the fc rate after overrides, unless they are given."""
    protocol = network_protocol(network)
    unknown = sorted(set(overrides) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown experiment parameter {unknown[0]!r}; known: {', '.join(sorted(_SECTIONS))}")
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
    if protocol.architecture.conv:
        sections["pruning"]["conv_rate"] = protocol.conv_rate
    for key, value in overrides.items():
        sections[_SECTIONS[key]][key] = value
    pruning = sections["pruning"]
    pruning.setdefault("output_rate", output_rate(pruning["fc_rate"]))
    return Experiment(
        network, TrainingHparams(**sections["training"]), PruningHparams(**pruning), **sections["experiment"]
    )


def scaled_experiment(network: str, scale: str, **overrides) -> Experiment:
    """The paper's experiment for `network` (its rounds, trials and control networks) at
    `scale`; `overrides` win."""
    protocol = network_protocol(network)
    paper = {"rounds": protocol.rounds, "trials": protocol.trials, "control_trials": protocol.control_trials}
    return paper_experiment(network, **{**paper, **SCALES[check_scale(scale)][network], **overrides})


def iterative_experiment(network: str, scale: str, **overrides) -> Experiment:
    """Iterative pruning with both of the paper's controls: what the notebooks draw."""
    return scaled_experiment(network, scale, controls=CONTROLS, **overrides)


def oneshot_experiment(network: str, scale: str, **overrides) -> Experiment:
    """The one-shot sweep at the same per-layer sizes, tickets only."""
    return scaled_experiment(network, scale, strategy="oneshot", **overrides)


def default_rewind_iterations(network: str, scale: str) -> list[int]:
    """The iterations k the rewinding notebook rewinds `network` to at `scale`: the
    `REWIND_FRACTIONS` of its training (0 first; at least 1 where the fraction is not 0)."""
    iterations = scaled_experiment(network, scale).training.iterations
    return sorted({max(1, round(f * iterations)) if f else 0 for f in REWIND_FRACTIONS})


def experiments_in_order(scale: str) -> list[Experiment]:
    """Every experiment the notebooks draw at `scale` with their default parameters, in the
    order `lth_lib.advance` trains them: LeNet iterative, the LeNet one-shot sweep, then
    Conv-2, Conv-4 and Conv-6 (the Conv-2 one-shot sweep is left out: its trained dense
    networks, which its levels are pruned from, are too large to travel)."""
    return [
        iterative_experiment("lenet300", scale),
        oneshot_experiment("lenet300", scale),
        *(iterative_experiment(network, scale) for network in ("conv2", "conv4", "conv6")),
    ]


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
