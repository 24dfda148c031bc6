"""What an experiment produced: a `Record` per trained network and level, the `Results`
of a run, and their reports (tables, fixed-width summaries, the controls' gaps).

Every report reads records only, so results drawn from a store and results just trained
read alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lth_lib.protocol import Experiment
from lth_lib.pruning import Mask


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


@dataclass
class Results:
    """A finished experiment: its records, and where they are stored (None: not stored)."""

    experiment: Experiment
    records: list[Record]
    directory: Path | None
    initial_weights: list[dict]  # each trial's theta_0
    rewind_weights: list[dict] | None  # each trial's weights at the rewind iteration k (theta_0 if k = 0)
    dense_weights: list[dict] | None  # each trial's trained dense network (level 0; None: not stored)
    masks: dict[int, list[Mask] | None]  # level -> each trial's ticket mask (None: not stored)

    def table(self) -> pd.DataFrame:
        """One row per trained member and level."""
        return records_table(self.records)

    def summary(self) -> pd.DataFrame:
        """Per kind and level: weights remaining, and the mean (min, max) over members of
        the early-stop iteration and test accuracy, as the paper's figures plot them."""
        table = self.table()
        metrics = {"early_stop_iteration": ["mean", "min", "max"], "early_stop_test_acc": ["mean", "min", "max"]}
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


def summary_text(results: Results, kinds: tuple[str, ...] | None = None) -> str:
    """`results.summary()` as a fixed-width table, rounded to be stable: accuracies in
    percent to two decimals, mean [min, max] over the members at each level."""
    rows = results.summary()
    if kinds is not None:
        rows = rows[rows.kind.isin(kinds)]
    lines = [f"{'kind':<13}{'level':>5}{'remaining':>11}{'nets':>5}  {'early-stop iteration':<24}{'test acc at early stop (%)':<27}{'final (%)':>9}"]
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
    rows = [{k: v for k, v in dataclasses.asdict(r).items() if k not in ("curve", "layer_remaining")} for r in records]
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


