"""Running an experiment: validate, reuse what the store holds, train the rest, resume.

    results = run(paper_experiment("lenet300", iterations=1000, rounds=2))
    results.table()     # one row per member and level
    results.curves()    # tidy test/validation curves

Levels are grouped into jobs, each trained as one ensemble (`lth_lib.lottery.run_job`):
iterative pruning trains one level per job (each depends on the last); a one-shot sweep
packs as many levels per job as `max_members` allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lth_lib.data import Dataset, data_copy, load_dataset
from lth_lib.lottery import Experiment, Job, Record, level_job, level_size, prune_tickets, run_job
from lth_lib.models import Network, architecture, glorot_init
from lth_lib.progress import TrainingBar
from lth_lib.pruning import Mask, dense_mask, remaining_fraction
from lth_lib.store import (
    Level,
    check_writable,
    curves_table,
    experiment_dir,
    load_level,
    records_table,
    save_level,
    write_description,
    write_tables,
)

DEFAULT_MAX_MEMBERS = 16


def default_max_members(network: str, device: str | torch.device) -> int:
    """How many networks a job trains at once unless told: DEFAULT_MAX_MEMBERS, except for
    convolutional networks on a CPU, which train one at a time: there the grouped
    convolution that stacks them is slower per network than a single network's
    (benchmarks/: Conv-2 on 2 cores, 5 stacked ran at 0.78x the reference loop's
    network-steps/s, one alone at 1.24x)."""
    if architecture(network).conv and torch.device(device).type == "cpu":
        return 1
    return DEFAULT_MAX_MEMBERS


@dataclass
class Results:
    """A finished experiment: its records, and where they are stored (None: not stored)."""

    experiment: Experiment
    records: list[Record]
    directory: Path | None
    initial_weights: list[dict]  # each trial's theta_0
    dense_weights: list[dict]  # each trial's trained dense network (level 0)
    masks: dict[int, list[Mask]]  # level -> each trial's ticket mask

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

    def percent_remaining(self, level: int) -> float:
        """The percent of weights the tickets keep at `level`."""
        return 100 * remaining_fraction(self.masks[level][0])

    def level_near(self, percent: float) -> int:
        """The pruned level whose tickets keep the percent of weights closest to `percent`."""
        pruned = [level for level in self.masks if level > 0]
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


def plan(exp: Experiment, max_members: int = DEFAULT_MAX_MEMBERS) -> list[list[int]]:
    """The levels trained together in each job, in order."""
    levels = list(range(1, exp.pruning.rounds + 1))
    if exp.pruning.strategy == "iterative":
        return [[0]] + [[level] for level in levels]
    group = max(1, max_members // level_size(exp, 1))
    return [[0]] + [levels[i : i + group] for i in range(0, len(levels), group)]


def run(
    exp: Experiment,
    data: Dataset | None = None,
    data_root: str | Path | None = None,
    results_root: str | Path | None = None,
    store: bool = True,
    device: str | torch.device | None = None,
    max_members: int | None = None,
    progress: bool = True,
) -> Results:
    """Run `exp`, reusing every finished level in the store and continuing from the first
    unfinished one. `data` (a Dataset) overrides loading from `data_root`/LTH_DATA.
    `max_members` networks train at once as one ensemble (default: `default_max_members`)."""
    dataset = architecture(exp.network).dataset
    copy = data.copy if data is not None else data_copy(dataset, data_root)  # fails early if missing
    if exp.data_copy and exp.data_copy != copy:
        raise ValueError(f"experiment asks for data copy {exp.data_copy!r} but the data found is {copy!r}")
    exp = dataclasses.replace(exp, data_copy=copy)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    max_members = default_max_members(exp.network, device) if max_members is None else max_members
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    directory = experiment_dir(exp, results_root) if store else None
    if directory is not None:
        check_writable(directory)
        write_description(directory, exp, max_members)
    loaded: list[Dataset] = []

    def get_data() -> Dataset:
        if not loaded:
            loaded.append(data.to(device) if data is not None else load_dataset(dataset, data_root, device))
        return loaded[0]

    theta0 = [glorot_init(Network(exp.network), seed) for seed in exp.seeds]
    masks = [dense_mask(exp.network) for _ in exp.seeds]
    start, dense, records, level_masks = theta0, None, [], {}
    stale = directory is None
    jobs = plan(exp, max_members)
    bar = None
    try:
        for j, levels in enumerate(jobs):
            for level in levels:
                level_masks[level] = _level_masks(exp, level, masks, dense)
            stored = [] if stale else [load_level(directory, level) for level in levels]
            if not stored or None in stored:
                stale = True  # every later job depends on this one: redo them all
                if progress and bar is None:  # one bar over all the training still to do
                    bar = TrainingBar(f"{exp.network} {exp.pruning.strategy}", _iterations(exp, jobs[j:], max_members))
                stored = _train_job(exp, levels, level_masks, start, get_data, max_members, bar)
                if directory is not None:
                    for level, result in zip(levels, stored):
                        save_level(directory, level, result.records, result.tensors)
            for result in stored:
                records += result.records
                if "dense" in result.tensors:
                    dense = [_to_state(w) for w in result.tensors["dense"]]
                    start = [_to_state(w) for w in result.tensors["rewind"]] if "rewind" in result.tensors else theta0
                if "next_masks" in result.tensors:
                    masks = [unpack_mask(m) for m in result.tensors["next_masks"]]
    finally:
        if bar is not None:
            bar.close()
    if directory is not None:
        write_tables(directory, records)
    return Results(exp, records, directory, theta0, dense, level_masks)


def _level_masks(exp: Experiment, level: int, masks: list[Mask], dense: list[dict] | None) -> list[Mask]:
    """Each trial's ticket mask at `level`: the running mask (iterative pruning, or the
    dense level 0), or the trained dense network pruned `level` rounds' worth at once."""
    if level == 0 or exp.pruning.strategy == "iterative":
        return masks
    return prune_tickets(exp, dense, [dense_mask(exp.network)] * exp.trials, rounds=level)


def _train_job(
    exp: Experiment,
    levels: list[int],
    level_masks: dict[int, list[Mask]],
    start: list[dict],
    get_data: Callable[[], Dataset],
    max_members: int,
    bar: TrainingBar | None,
) -> list[Level]:
    """Train one job's levels together; one stored Level per level."""
    job = Job()
    for level in levels:
        level_job(exp, level, level_masks[level], start, job)
    k = exp.pruning.rewind_iteration
    first = 0 if levels == [0] else k
    name = f"level {levels[0]}" if len(levels) == 1 else f"levels {levels[0]}-{levels[-1]}"
    nets = f"{len(job.members)} net{'s' if len(job.members) != 1 else ''}"
    progress = bar.job(f"{name}/{exp.pruning.rounds} ({nets})", first) if bar else None
    records, results = run_job(
        exp, job, get_data(), first, k if levels == [0] and k else None, max_members, progress
    )
    out = []
    for level in levels:
        level_records = [r for r in records if r.level == level]
        tickets = [res for (kind, _, lv, _), res in zip(job.labels, results) if kind == "ticket" and lv == level]
        tensors: dict = {}
        if level == 0:
            tensors["dense"] = [r.final_weights for r in tickets]
            if k:
                tensors["rewind"] = [r.snapshot for r in tickets]
        if level == 0 or exp.pruning.strategy == "iterative":
            next_masks = prune_tickets(exp, [r.final_weights for r in tickets], level_masks[level])
            tensors["next_masks"] = [pack_mask(m) for m in next_masks]
        out.append(Level(level_records, tensors))
    return out


def _iterations(exp: Experiment, jobs: list[list[int]], max_members: int) -> int:
    """The training iterations `jobs` take, counting each chunk of `max_members` networks."""
    total = 0
    for levels in jobs:
        chunks = -(-sum(level_size(exp, level) for level in levels) // max_members)
        first = 0 if levels == [0] else exp.pruning.rewind_iteration
        total += chunks * (exp.training.iterations - first)
    return total


def _to_state(state: dict) -> dict:
    return {name: value.cpu() for name, value in state.items()}


def pack_mask(mask: Mask) -> dict:
    """A mask as bit-packed uint8 tensors (8x smaller on disk), with each layer's shape."""
    return {
        layer: (torch.from_numpy(np.packbits(m.cpu().numpy().ravel())), tuple(m.shape)) for layer, m in mask.items()
    }


def unpack_mask(packed: dict) -> Mask:
    """The mask `pack_mask` packed."""
    out = {}
    for layer, (bits, shape) in packed.items():
        n = int(np.prod(shape))
        out[layer] = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool)).view(shape)
    return out
