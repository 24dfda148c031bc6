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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lth_lib.data import DataNotFoundError, Dataset, data_copy, load_dataset
from lth_lib.lottery import Experiment, Job, Record, level_job, level_size, prune_tickets, run_job
from lth_lib.models import Network, architecture, glorot_init
from lth_lib.portable import read_level, stored_folders
from lth_lib.progress import TrainingBar
from lth_lib.pruning import Mask, dense_mask, pack_mask, unpack_mask
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
GPU_MAX_MEMBERS = 40  # a whole paper-scale level (5 tickets and 30 controls) in one stack


def default_max_members(network: str, device: str | torch.device) -> int:
    """How many networks a job trains at once unless told. On a GPU, GPU_MAX_MEMBERS: one
    step of 35 stacked LeNets costs little more than one of 16 (benchmarks/). On a CPU,
    DEFAULT_MAX_MEMBERS, except for convolutional networks, which train one at a time:
    there the grouped convolution that stacks them is slower per network than a single
    network's (Conv-2 on 2 cores, 5 stacked ran at 0.78x the reference loop's
    network-steps/s, one alone at 1.24x)."""
    if torch.device(device).type == "cuda":
        return GPU_MAX_MEMBERS
    return 1 if architecture(network).conv else DEFAULT_MAX_MEMBERS


@dataclass
class Results:
    """A finished experiment: its records, and where they are stored (None: not stored)."""

    experiment: Experiment
    records: list[Record]
    directory: Path | None
    initial_weights: list[dict]  # each trial's theta_0
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


def plan(exp: Experiment, max_members: int = DEFAULT_MAX_MEMBERS) -> list[list[int]]:
    """The levels trained together in each job, in order."""
    levels = list(range(1, exp.pruning.rounds + 1))
    if exp.pruning.strategy == "iterative":
        return [[0]] + [[level] for level in levels]
    group = max(1, max_members // level_size(exp, 1))
    return [[0]] + [levels[i : i + group] for i in range(0, len(levels), group)]


class OutOfTime(RuntimeError):
    """Training stopped: the level under way would not finish before the deadline."""


class NothingStoredError(LookupError):
    """An experiment was to be drawn without training, and no store holds any of its levels."""


def run(
    exp: Experiment,
    data: Dataset | None = None,
    data_root: str | Path | None = None,
    results_root: str | Path | None = None,
    store: bool = True,
    device: str | torch.device | None = None,
    max_members: int | None = None,
    progress: bool = True,
    portable: str | Path | None = None,
    train: bool = True,
    deadline: float | None = None,
) -> Results:
    """Run `exp`, reusing every finished level in the store and continuing from the first
    unfinished one. `data` (a Dataset) overrides loading from `data_root`/LTH_DATA.
    `max_members` networks train at once as one ensemble (default: `default_max_members`).

    `portable`: a portable store (`lth_lib.portable`, e.g. the committed paper-scale
    results) whose levels come first; the results store adds the levels trained after
    them. `train=False` draws only what is stored: the levels from 0 up to the first one
    missing (`NothingStoredError` if there are none), without the data set. `deadline` (a
    `time.monotonic()` value): stop with `OutOfTime`, keeping every finished level, rather
    than start or go on with a level that would end after it."""
    exp = dataclasses.replace(exp, data_copy=_data_copy(exp, data, data_root, portable, train))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    max_members = default_max_members(exp.network, device) if max_members is None else max_members
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    directory = experiment_dir(exp, results_root) if store else None
    if directory is not None and train:
        check_writable(directory)
        write_description(directory, exp, max_members)
    committed = experiment_dir(exp, portable) if portable is not None else None
    loaded: list[Dataset] = []

    def get_data() -> Dataset:
        if not loaded:
            dataset = architecture(exp.network).dataset
            loaded.append(data.to(device) if data is not None else load_dataset(dataset, data_root, device))
        return loaded[0]

    theta0 = [glorot_init(Network(exp.network), seed) for seed in exp.seeds]
    masks: list[Mask] | None = [dense_mask(exp.network) for _ in exp.seeds]
    start: list[dict] | None = theta0
    dense, records, level_masks = None, [], {}
    stale, diverged = directory is None and committed is None, False
    jobs = plan(exp, max_members)
    bar = None
    try:
        for j, levels in enumerate(jobs):
            for level in levels:
                level_masks[level] = _level_masks(exp, level, masks, dense)
            stored = []
            for level in [] if stale else levels:
                ours = read_level(committed, level) if committed is not None else None
                local = load_level(directory, level) if directory is not None and not diverged else None
                if ours is not None and local is not None and ours.records != local.records:
                    diverged = True  # the results store's later levels grew from other results
                stored.append(ours or local)
            if not stored or None in stored:
                if not train:
                    break
                stale = True  # every later job depends on this one: redo them all
                if progress and bar is None:  # one bar over all the training still to do
                    bar = TrainingBar(f"{exp.network} {exp.pruning.strategy}", job_iterations(exp, jobs[j:], max_members))
                stored = _train_job(exp, levels, level_masks, start, get_data, max_members, bar, deadline)
                if directory is not None:
                    for level, result in zip(levels, stored):
                        save_level(directory, level, result.records, result.tensors)
            for level, result in zip(levels, stored):
                records += result.records
                tensors = result.tensors
                if "dense" in tensors:
                    dense = [_to_state(w) for w in tensors["dense"]]
                if level == 0 and exp.pruning.rewind_iteration:
                    start = [_to_state(w) for w in tensors["rewind"]] if "rewind" in tensors else None
                if "next_masks" in tensors:
                    masks = [unpack_mask(m) for m in tensors["next_masks"]]
                elif exp.pruning.strategy == "iterative":
                    masks = None  # a portable store keeps only some levels' masks
    finally:
        if bar is not None:
            bar.close()
    if not records:
        raise NothingStoredError(
            f"no level of {exp.network} {exp.pruning.strategy} ({exp.identity()}) is stored in "
            f"{' or '.join(str(p) for p in (committed, directory) if p is not None)}; run it with train=True"
        )
    if directory is not None and train:
        write_tables(directory, records)
    done = {r.level for r in records}
    return Results(exp, records, directory, theta0, dense, {lv: m for lv, m in level_masks.items() if lv in done})


def _data_copy(exp: Experiment, data: Dataset | None, data_root, portable, train: bool) -> str:
    """The data copy `exp` runs on: the data's; without training, the one `exp` names, else
    the local copy's, else the one the portable store holds `exp` for."""
    if not train and data is None and exp.data_copy:
        return exp.data_copy
    if data is not None:
        copy = data.copy
    else:
        try:
            copy = data_copy(architecture(exp.network).dataset, data_root)  # fails early if missing
        except DataNotFoundError:
            copies = list(stored_folders(exp, Path(portable))) if portable is not None and not train else []
            if len(copies) != 1:
                raise
            copy = copies[0]
    if exp.data_copy and exp.data_copy != copy:
        raise ValueError(f"experiment asks for data copy {exp.data_copy!r} but the data found is {copy!r}")
    return copy


def _level_masks(exp: Experiment, level: int, masks: list[Mask] | None, dense: list[dict] | None
                 ) -> list[Mask] | None:  # fmt: skip
    """Each trial's ticket mask at `level`: the running mask (iterative pruning, or the
    dense level 0), or the trained dense network pruned `level` rounds' worth at once;
    None where the store does not keep what they come from."""
    if level == 0 or exp.pruning.strategy == "iterative":
        return masks
    if dense is None:
        return None
    return prune_tickets(exp, dense, [dense_mask(exp.network)] * exp.trials, rounds=level)


def _train_job(
    exp: Experiment,
    levels: list[int],
    level_masks: dict[int, list[Mask]],
    start: list[dict],
    get_data: Callable[[], Dataset],
    max_members: int,
    bar: TrainingBar | None,
    deadline: float | None,
) -> list[Level]:
    """Train one job's levels together; one stored Level per level."""
    missing = [level for level in levels if level_masks[level] is None] or ([] if start is not None else levels)
    if missing:
        raise RuntimeError(
            f"{exp.network} {exp.pruning.strategy}: the stored levels before level {missing[0]} do not keep the masks "
            f"or weights it starts from (a portable store keeps large ones only at its last level); "
            f"train it from level 0 in an empty results store"
        )
    job = Job()
    for level in levels:
        level_job(exp, level, level_masks[level], start, job)
    k = exp.pruning.rewind_iteration
    first = 0 if levels == [0] else k
    name = f"level {levels[0]}" if len(levels) == 1 else f"levels {levels[0]}-{levels[-1]}"
    nets = f"{len(job.members)} net{'s' if len(job.members) != 1 else ''}"
    chunks = -(-len(job.members) // max_members)
    watchers = [bar.job(f"{name}/{exp.pruning.rounds} ({nets})", first)] if bar else []
    if deadline is not None:
        watchers.append(_deadline_watch(deadline, chunks * (exp.training.iterations - first), first, name))

    def progress(iteration: int, metrics: dict) -> None:
        for watch in watchers:
            watch(iteration, metrics)

    data = get_data()
    started = time.monotonic()
    records, results = run_job(exp, job, data, first, k if levels == [0] and k else None, max_members, progress)
    trained = {
        "seconds": round(time.monotonic() - started, 1), "levels_in_job": len(levels), "networks": len(job.members),
        "at_once": min(max_members, len(job.members)), "device": device_name(data.train_x.device),
        "torch": str(torch.__version__),
    }  # fmt: skip
    out = []
    for level in levels:
        level_records = [r for r in records if r.level == level]
        tickets = [res for (kind, _, lv, _), res in zip(job.labels, results) if kind == "ticket" and lv == level]
        tensors: dict = {"trained": trained}
        if level == 0:
            tensors["dense"] = [r.final_weights for r in tickets]
            if k:
                tensors["rewind"] = [r.snapshot for r in tickets]
        if level == 0 or exp.pruning.strategy == "iterative":
            next_masks = prune_tickets(exp, [r.final_weights for r in tickets], level_masks[level])
            tensors["next_masks"] = [pack_mask(m) for m in next_masks]
        out.append(Level(level_records, tensors))
    return out


def _deadline_watch(deadline: float, total: int, first: int, name: str) -> Callable[[int, dict], None]:
    """A progress callback that raises OutOfTime at an evaluation point once the job (`total`
    iterations, in chunks each starting at `first`) is past the deadline or, judged on at
    least 5 s or 2% of it, would end after it. The rate is measured from the first
    evaluation point on, so that set-up (data, a CUDA graph's capture) does not count as
    slow training (2% into a 23 s level on a GPU, counting it made the level look like a
    2-minute one)."""
    started, done, last = None, 0, first

    def check(iteration: int, metrics: dict) -> None:
        nonlocal started, done, last
        now = time.monotonic()
        if started is None:
            started = now
        if iteration < last:  # the next chunk of members started
            last = first
        done, last = done + iteration - last, iteration
        judged = done > 0 and (now - started >= 5 or done >= total / 50)
        finish = now + (now - started) * (total - done) / done if judged else now
        if finish > deadline:
            raise OutOfTime(f"{name} would end {finish - deadline:.0f} s after the deadline ({done:,} of {total:,} iterations done)")

    return check


def job_iterations(exp: Experiment, jobs: list[list[int]], max_members: int) -> int:
    """The training iterations `jobs` take, counting each chunk of `max_members` networks."""
    total = 0
    for levels in jobs:
        chunks = -(-sum(level_size(exp, level) for level in levels) // max_members)
        first = 0 if levels == [0] else exp.pruning.rewind_iteration
        total += chunks * (exp.training.iterations - first)
    return total


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's core count: where a level was trained."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def _to_state(state: dict) -> dict:
    return {name: value.cpu() for name, value in state.items()}
