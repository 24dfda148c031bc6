"""What an experiment produced: a `Record` per trained network and level, a `Level` (one
finished level of some trials, as the lottery loop carries it and the stores keep it),
the `Results` of a run, and their reports (tables, fixed-width summaries, the controls'
gaps).

A store may not keep every tensor a level had (the portable store keeps large masks and
weights only where a resume needs them): what it does not keep is a `NotKept`, which
raises `NotKeptError` saying what is missing and why as soon as it is used, so no caller
checks for it. Every report reads records only, so results drawn from a store and
results just trained read alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lth_lib.models import State
from lth_lib.paths import atomic_write
from lth_lib.protocol import Experiment
from lth_lib.pruning import Mask

METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")  # a curve holds these at each "iteration"


class NotKeptError(LookupError):
    """Masks or weights were asked for that the store the results come from does not keep."""


class NotKept:
    """In place of per-trial masks or weights that a store does not keep: any use of it
    (indexing, iterating, its length or truth) raises NotKeptError with `why`."""

    def __init__(self, why: str):
        self.why = why

    def _refuse(self, *args) -> None:
        raise NotKeptError(self.why)

    __getitem__ = __iter__ = __len__ = __bool__ = _refuse

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NotKept) and other.why == self.why

    __hash__ = None

    def __repr__(self) -> str:
        return f"NotKept({self.why!r})"


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

    def __eq__(self, other: object) -> bool:
        """Field by field, where a curve's NaN (a test metric not evaluated at that point:
        `train.train`'s `test_every`) equals another NaN."""
        if not isinstance(other, Record):
            return NotImplemented
        return all(
            _same_curves(mine, theirs) if f.name == "curve" else mine == theirs
            for f in dataclasses.fields(self)
            for mine, theirs in [(getattr(self, f.name), getattr(other, f.name))]
        )


def _same_curves(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k])
        and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[k], b[k]))
        for k in a
    )


@dataclass
class Level:
    """One finished level of some trials: their records, and what the levels after it
    start from. Each list holds one entry per trial in `trials` order; None where the
    level has no such thing (only level 0 has dense weights), NotKept where it had them
    and the store they come from did not keep them."""

    records: list[Record]
    next_masks: list[Mask] | NotKept | None = None  # each trial's ticket mask for the next level
    dense: list[State] | NotKept | None = None  # level 0: each trial's trained dense network
    rewind: list[State] | NotKept | None = (
        None  # level 0, late rewinding: each trial's weights at iteration k
    )
    trained: dict | None = (
        None  # how it was trained: seconds, networks, at once, device, torch, trials, precision
    )
    # level 0 as trained: each trial's weights at every rewind point ({k: weights}), which
    # only the shared dense store keeps (`lth_lib.store.DenseStore`)
    snapshots: list[dict[int, State]] | None = None
    # levels above 0: each trial's trained ticket where the network is small
    # (`lottery.KEEP_TRAINED_BELOW`); the results store keeps them, the portable store not
    tickets: list[State] | NotKept | None = None

    @property
    def trials(self) -> list[int]:
        """The trials this level holds (every trial has a ticket record), in order."""
        return sorted({r.trial for r in self.records})

    def select(self, trials: list[int]) -> Level | None:
        """The level of `trials` only (None if it lacks one of them)."""
        mine = self.trials
        if not set(trials) <= set(mine):
            return None
        at = [mine.index(t) for t in trials]

        def pick(values):
            return values if values is None or isinstance(values, NotKept) else [values[i] for i in at]

        records = [r for t in trials for r in self.records if r.trial == t]
        return Level(records, pick(self.next_masks), pick(self.dense), pick(self.rewind), self.trained,
                     pick(self.snapshots), pick(self.tickets))  # fmt: skip

    @classmethod
    def join(cls, levels: list[Level]) -> Level:
        """The trials of `levels` side by side (see `concatenated`). `trained` is the one
        record where one job trained them all, else a summary."""

        def joined(name: str):
            return concatenated([getattr(level, name) for level in levels])

        records = [r for level in levels for r in level.records]
        return cls(records, joined("next_masks"), joined("dense"), joined("rewind"), _joined_training(levels),
                   joined("snapshots"), joined("tickets"))  # fmt: skip

    def filled_from(self, other: Level | None) -> Level:
        """This level with what it does not keep taken from `other`, the same level from
        another store (`other` must hold the same records)."""
        if other is None:
            return self

        def fill(name: str):
            ours = getattr(self, name)
            return getattr(other, name) if isinstance(ours, NotKept) else ours

        return Level(self.records, fill("next_masks"), fill("dense"), fill("rewind"), self.trained,
                     tickets=fill("tickets"))  # fmt: skip


def concatenated(parts: list) -> list | NotKept | None:
    """Per-trial lists of groups of trials, one after another; the first NotKept if a
    group's is not kept, else None if a group has none."""
    not_kept = [p for p in parts if isinstance(p, NotKept)]
    if not_kept:
        return not_kept[0]
    return None if any(p is None for p in parts) else [x for p in parts for x in p]


def _joined_training(levels: list[Level]) -> dict | None:
    """How the trials of `levels` were trained: one job's record if one job trained them
    all, else the jobs' seconds and networks summed (each job's record names its trials)."""
    jobs = list({json.dumps(level.trained, sort_keys=True): level.trained for level in levels}.values())
    if any(job is None for job in jobs):
        return None
    if len(jobs) == 1:
        return jobs[0]
    return {
        "seconds": round(sum(j["seconds"] for j in jobs), 1), "levels_in_job": max(j["levels_in_job"] for j in jobs),
        "networks": sum(j["networks"] for j in jobs), "at_once": max(j["at_once"] for j in jobs),
        "device": ", ".join(sorted({j["device"] for j in jobs})), "torch": ", ".join(sorted({j["torch"] for j in jobs})),
        "trials": sorted(t for j in jobs for t in j.get("trials", [])),
        "precision": ", ".join(sorted({precision_of(j) for j in jobs})),
    }  # fmt: skip


def precision_of(trained: dict | None) -> str:
    """The precision a level's `trained` record names; float32 where it names none (levels
    trained before precision was recorded trained in float32, the only one there was)."""
    return (trained or {}).get("precision", "float32")


@dataclass
class Results:
    """A finished experiment: its records, and where they are stored (None: not stored)."""

    experiment: Experiment
    records: list[Record]
    directory: Path | None
    initial_weights: list[State]  # each trial's theta_0
    rewind_weights: list[State] | NotKept  # each trial's weights at the rewind iteration k (theta_0 if k = 0)
    dense_weights: list[State] | NotKept  # each trial's trained dense network (level 0)
    masks: dict[int, list[Mask] | NotKept]  # level -> each trial's ticket mask
    # level -> each trial's trained ticket (level 0: the dense network), where kept
    trained_tickets: dict[int, list[State] | NotKept] = field(default_factory=dict)
    # the precisions its levels trained in (`protocol.PRECISIONS`), e.g. "float32" or "float32, tf32"
    precision: str = "float32"

    def table(self) -> pd.DataFrame:
        """One row per trained member and level."""
        return records_table(self.records)

    def summary(self) -> pd.DataFrame:
        """Per kind and level: weights remaining, and the mean (min, max) over members of
        the early-stop iteration and test accuracy, as the paper's figures plot them."""
        table = self.table()
        metrics = {
            "early_stop_iteration": ["mean", "min", "max"],
            "early_stop_test_acc": ["mean", "min", "max"],
        }
        out = table.groupby(["kind", "level"], sort=False).agg(
            percent_remaining=("percent_remaining", "mean"),
            members=("trial", "size"),
            **{f"{m}_{f}": (m, f) for m, fs in metrics.items() for f in fs},
            final_test_acc_mean=("final_test_acc", "mean"),
        )
        return out.reset_index()

    @property
    def levels_done(self) -> int:
        """How many levels the records cover, the dense level 0 included (rounds + 1 when
        the experiment is complete; fewer when drawn from a store still being filled)."""
        return len({r.level for r in self.records})

    def percent_remaining(self, level: int) -> float:
        """The percent of weights the tickets keep at `level`."""
        return next(r.percent_remaining for r in self.records if r.kind == "ticket" and r.level == level)

    def level_near(self, percent: float) -> int:
        """The pruned level whose tickets keep the percent of weights closest to `percent`."""
        pruned = sorted({r.level for r in self.records if r.level > 0})
        if not pruned:
            raise ValueError("this experiment has no pruned levels")
        return min(pruned, key=lambda level: abs(self.percent_remaining(level) - percent))

    def curves(self) -> pd.DataFrame:
        """Tidy curves: one row per member, level and evaluation point."""
        return curves_table(self.records)

    def write_tables(self) -> None:
        """records.csv (`table`) and curves.csv (`curves`) beside the stored levels, each
        loadable with one pandas.read_csv call (nothing where the results are not stored)."""
        if self.directory is not None:
            for name, table in (("records.csv", self.table()), ("curves.csv", self.curves())):
                atomic_write(self.directory / name, table.to_csv(index=False).encode())


def summary_text(results: Results, kinds: tuple[str, ...] | None = None) -> str:
    """`results.summary()` as a fixed-width table, rounded to be stable: accuracies in
    percent to two decimals, mean [min, max] over the members at each level."""
    rows = results.summary()
    if kinds is not None:
        rows = rows[rows.kind.isin(kinds)]
    lines = [
        f"{'kind':<13}{'level':>5}{'remaining':>11}{'nets':>5}  {'early-stop iteration':<24}{'test acc at early stop (%)':<27}{'final (%)':>9}"
    ]
    for r in rows.itertuples():
        iterations = f"{r.early_stop_iteration_mean:>7.0f} [{r.early_stop_iteration_min}, {r.early_stop_iteration_max}]"
        accuracy = (
            f"{100 * r.early_stop_test_acc_mean:6.2f} [{100 * r.early_stop_test_acc_min:.2f}, "
            f"{100 * r.early_stop_test_acc_max:.2f}]"
        )
        lines.append(
            f"{r.kind:<13}{r.level:>5}{r.percent_remaining:>10.2f}%{r.members:>5}  {iterations:<24}{accuracy:<27}"
            f"{100 * r.final_test_acc_mean:>9.2f}"
        )
    return "\n".join(lines)


def trained_text(results: Results) -> str:
    """What was trained, per kind and level: weights remaining, networks, the iterations
    they trained and their evaluation points. All of it follows from the experiment and
    its seed, never from a machine's float rounding, so notebooks let nbval compare it
    exactly on any machine; the metrics themselves are in `summary_text`."""
    rows = [f"{'kind':<13}{'level':>5}{'remaining':>11}{'nets':>5}{'iterations':>12}{'evaluations':>13}"]
    groups: dict[tuple[str, int], list[Record]] = {}
    for record in results.records:
        groups.setdefault((record.kind, record.level), []).append(record)
    for (kind, level), members in groups.items():
        iterations = members[0].curve["iteration"]
        rows.append(
            f"{kind:<13}{level:>5}{members[0].percent_remaining:>10.2f}%{len(members):>5}"
            f"{f'{iterations[0]:,}-{iterations[-1]:,}':>12}{len(iterations):>13}"
        )
    return "\n".join(rows)


def control_gaps(results: Results) -> pd.DataFrame:
    """Per pruned level: how much more accurate the winning tickets are than each control
    (points of mean early-stop test accuracy), and how many times later each control
    reaches early stop."""
    summary = results.summary().set_index(["kind", "level"])
    tickets = summary.loc["ticket"]
    out = pd.DataFrame({"percent_remaining": tickets.percent_remaining.round(2)})
    for control in results.experiment.controls:
        other = summary.loc[control]
        gap = 100 * (tickets.early_stop_test_acc_mean - other.early_stop_test_acc_mean)
        out[f"acc_gap_vs_{control}"] = gap.round(2)
        ratio = other.early_stop_iteration_mean / tickets.early_stop_iteration_mean
        out[f"early_stop_ratio_{control}"] = ratio.round(2)
    return out.dropna().reset_index()


def records_table(records: list[Record]) -> pd.DataFrame:
    """One row per trained member and level (curves and per-layer counts left out)."""
    rows = [
        {k: v for k, v in dataclasses.asdict(r).items() if k not in ("curve", "layer_remaining")}
        for r in records
    ]
    return pd.DataFrame(rows)


def curves_table(records: list[Record]) -> pd.DataFrame:
    """Tidy curves: one row per member, level and evaluation point."""
    frames = []
    for r in records:
        frame = pd.DataFrame(r.curve)
        frame.insert(0, "control_index", r.control_index)
        frame.insert(0, "percent_remaining", r.percent_remaining)
        frame.insert(0, "level", r.level)
        frame.insert(0, "trial", r.trial)
        frame.insert(0, "kind", r.kind)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
