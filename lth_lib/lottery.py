"""Experiments: iterative and one-shot pruning with rewinding and the paper's controls.

An `Experiment` is a plain frozen dataclass; its identity is a hash of its fields. A
round trains every member it needs (each trial's ticket, and the controls beside it) as
one ensemble, then prunes each trial's trained ticket to give the next round's mask.

- Winning ticket: the survivors reset to their values at the rewind iteration k
  (k = 0: the original init theta_0) and train from iteration k to the end.
- Random reinitialisation: the ticket's mask with a fresh Glorot init.
- Random pruning: a random mask with the ticket's per-layer counts, on the ticket's
  initial values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from lth_lib.data import Dataset
from lth_lib.models import Network, architecture, count_prunable, glorot_init
from lth_lib.pruning import (
    PAPER_RATES,
    Mask,
    check_rate,
    layer_rates,
    magnitude_prune,
    mask_counts,
    output_rate,
    random_prune,
    remaining_fraction,
    surviving_counts,
)
from lth_lib.seeding import derive_seed, generator
from lth_lib.train import PAPER_PROTOCOL, Member, TrainingHparams, TrainResult, train

STRATEGIES = ("iterative", "oneshot")
SCOPES = ("layer", "global")
CONTROLS = ("reinit", "random_prune")


@dataclass(frozen=True)
class PruningHparams:
    """How tickets are found. `rounds` is the number of pruning rounds (iterative), or
    the one-shot levels 1..rounds, each pruned once to that round's per-layer counts."""

    strategy: str = "iterative"  # "iterative" or "oneshot"
    rounds: int = 5
    scope: str = "layer"  # "layer": per-layer rates; "global": one threshold at fc_rate
    conv_rate: float = 0.1  # fraction of the remaining conv weights pruned per round
    fc_rate: float = 0.2  # same, fully connected layers
    output_rate: float = 0.1  # same, output layer (`paper_experiment` derives it from fc_rate)
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
        architecture(self.network)
        if self.trials < 1 or self.control_trials < 1:
            raise ValueError("trials and control_trials must be at least 1")
        for control in self.controls:
            _choice("control", control, CONTROLS)
        if self.pruning.rewind_iteration >= self.training.iterations:
            raise ValueError(
                f"rewind_iteration ({self.pruning.rewind_iteration}) must be below "
                f"iterations ({self.training.iterations})"
            )
        if self.network == "lenet300" and self.pruning.conv_rate != PruningHparams.conv_rate:
            raise ValueError("lenet300 has no conv layers: leave conv_rate at its default")

    @property
    def seeds(self) -> list[int]:
        """One seed per trial."""
        return [self.seed + t for t in range(self.trials)]

    @property
    def rates(self) -> dict[str, float]:
        """Per-layer pruning rates."""
        p = self.pruning
        conv = p.conv_rate if architecture(self.network).conv else None
        return layer_rates(self.network, conv=conv, fc=p.fc_rate, output=p.output_rate)

    def to_dict(self) -> dict:
        """The experiment as plain JSON-ready data."""
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """A stable hash of the fields that differ from their defaults.

        A field added later with a no-op default leaves existing identities unchanged.
        """
        return hashlib.sha256(json.dumps(_non_default(self), sort_keys=True).encode()).hexdigest()[:16]


def paper_experiment(network: str, **overrides) -> Experiment:
    """The paper's protocol for `network`. `overrides` may name any field of Experiment,
    TrainingHparams or PruningHparams (e.g. iterations=1000, rounds=3, trials=2). Unless
    `output_rate` is given, it follows the fc rate after overrides (`pruning.output_rate`)."""
    architecture(network)
    iterations, lr = PAPER_PROTOCOL[network]
    rates = PAPER_RATES[network]
    sections: dict[str, dict] = {
        "training": {"iterations": iterations, "lr": lr},
        "pruning": {"fc_rate": rates["fc"]},
        "experiment": {},
    }
    if architecture(network).conv:
        sections["pruning"]["conv_rate"] = rates["conv"]
    owners = {f.name: "training" for f in dataclasses.fields(TrainingHparams)}
    owners |= {f.name: "pruning" for f in dataclasses.fields(PruningHparams)}
    owners |= {f.name: "experiment" for f in dataclasses.fields(Experiment) if f.name not in _NESTED}
    for key, value in overrides.items():
        if key not in owners:
            raise ValueError(f"unknown experiment parameter {key!r}; known: {', '.join(sorted(owners))}")
        sections[owners[key]][key] = value
    pruning = sections["pruning"]
    pruning.setdefault("output_rate", output_rate(pruning["fc_rate"]))
    return Experiment(
        network,
        TrainingHparams(**sections["training"]),
        PruningHparams(**sections["pruning"]),
        **sections["experiment"],
    )


_NESTED = ("network", "training", "pruning")


def pruning_schedule(exp: Experiment) -> str:
    """The weights each layer keeps at every level of `exp`, as a fixed-width table.

    Layer-wise pruning keeps exactly these counts (global pruning keeps the same total
    but lets the split between layers float)."""
    counts = count_prunable(exp.network)
    layers = list(counts)
    rows = [f"{'level':>5}" + "".join(f"{layer:>11}" for layer in layers) + f"{'total':>11}{'percent':>9}"]
    total = sum(counts.values())
    for level in range(exp.pruning.rounds + 1):
        left = surviving_counts(counts, exp.rates, level)
        kept = sum(left.values())
        rows.append(
            f"{level:>5}" + "".join(f"{left[layer]:>11,}" for layer in layers) + f"{kept:>11,}{100 * kept / total:>8.2f}%"
        )
    rates = ", ".join(f"{layer} {rate:g}" for layer, rate in exp.rates.items())
    return f"rates per round: {rates}\n" + "\n".join(rows)


@dataclass
class Record:
    """One trained member of one round: what the paper's figures plot."""

    kind: str  # "ticket", "reinit" or "random_prune"
    trial: int
    level: int  # pruning round (iterative) or one-shot level; 0 is the dense network
    control_index: int  # which control network of this ticket (0 for tickets)
    percent_remaining: float
    layer_remaining: dict[str, int]
    early_stop_iteration: int
    early_stop_val_loss: float
    early_stop_val_acc: float
    early_stop_test_acc: float
    final_test_acc: float
    curve: dict[str, list[float]] = field(repr=False)


Progress = Callable[[int, dict[str, list[float]]], None]


@dataclass
class Job:
    """Members trained together as one ensemble, with what each one is."""

    labels: list[tuple[str, int, int, int]] = field(default_factory=list)  # kind, trial, level, control
    members: list[Member] = field(default_factory=list)

    def add(self, kind: str, trial: int, level: int, control: int, member: Member) -> None:
        self.labels.append((kind, trial, level, control))
        self.members.append(member)


def level_size(exp: Experiment, level: int) -> int:
    """How many networks `level_job` trains at `level`: each trial's ticket and, beyond
    the dense level 0, its controls."""
    return exp.trials * (1 if level == 0 else 1 + len(exp.controls) * exp.control_trials)


def level_job(exp: Experiment, level: int, masks: list[Mask], start: list[dict], job: Job | None = None) -> Job:
    """Add one level's tickets (one per trial, with `masks` on `start` weights) and,
    beyond the dense level 0, its controls to `job` (a new one if None)."""
    job = job or Job()
    template = Network(exp.network)
    for t, seed in enumerate(exp.seeds):
        job.add("ticket", t, level, 0, Member(start[t], masks[t], seed))
    if level == 0:
        return job
    for control in exp.controls:
        for t, seed in enumerate(exp.seeds):
            for c in range(exp.control_trials):
                purpose = f"{control}/level{level}/{c}"
                if control == "reinit":
                    member = Member(glorot_init(template, derive_seed(seed, purpose)), masks[t], seed)
                else:
                    member = Member(start[t], random_prune(masks[t], generator(seed, purpose)), seed)
                job.add(control, t, level, c, member)
    return job


def run_job(
    exp: Experiment,
    job: Job,
    data: Dataset,
    start_iteration: int,
    snapshot_iteration: int | None = None,
    max_members: int = 16,
    progress: Progress | None = None,
) -> tuple[list[Record], list[TrainResult]]:
    """Train a job's members, at most `max_members` at a time; records and raw results."""
    results: list[TrainResult] = []
    for first in range(0, len(job.members), max_members):
        chunk = job.members[first : first + max_members]
        results += train(exp.network, chunk, data, exp.training, start_iteration, snapshot_iteration, progress)
    records = [
        _record(kind, trial, level, control, member.mask, result)
        for (kind, trial, level, control), member, result in zip(job.labels, job.members, results)
    ]
    return records, results


def prune_tickets(exp: Experiment, weights: list[dict], masks: list[Mask], rounds: int = 1) -> list[Mask]:
    """Each trial's next mask: `rounds` rounds of magnitude pruning of its trained weights."""
    return [
        magnitude_prune(weights_of(w), m, exp.rates, rounds, exp.pruning.scope) for w, m in zip(weights, masks)
    ]


def weights_of(state: dict) -> dict:
    """The prunable weights of a member state, keyed by layer name."""
    return {name.split(".")[1]: value for name, value in state.items() if name.endswith("weight")}


def _record(kind: str, trial: int, level: int, control: int, mask: Mask, r: TrainResult) -> Record:
    return Record(
        kind=kind,
        trial=trial,
        level=level,
        control_index=control,
        percent_remaining=100 * remaining_fraction(mask),
        layer_remaining=mask_counts(mask),
        early_stop_iteration=r.early_stop_iteration,
        early_stop_val_loss=r.early_stop_val_loss,
        early_stop_val_acc=r.early_stop_val_acc,
        early_stop_test_acc=r.early_stop_test_acc,
        final_test_acc=r.final_test_acc,
        curve=r.curve,
    )


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
