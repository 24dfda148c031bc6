"""The lottery loop: find winning tickets by iterative or one-shot pruning with rewinding,
train the paper's controls beside them, and run an experiment level by level, reusing
what the results store holds and resuming where it stops.

    results = run(paper_experiment("lenet300", iterations=1000, rounds=2))
    results.table()     # one row per member and level (see `lth_lib.results`)

- Winning ticket: the survivors reset to their values at the rewind iteration k
  (k = 0: the original init theta_0) and train from iteration k to the end.
- Random reinitialisation: the ticket's mask with a fresh Glorot init.
- Random pruning: a random mask with the ticket's per-layer counts, on the ticket's
  initial values.

A level's members (each trial's ticket and the controls beside it) train as one ensemble
(`run_job`). Iterative pruning trains one level per job (each depends on the last); a
one-shot sweep packs as many levels per job as `max_members` allows. Between levels, the
loop carries a `store.Level`: the next masks, the trained dense networks, the weights
rewound to.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lth_lib.data import DataNotFoundError, Dataset, data_copy, load_dataset
from lth_lib.models import glorot_init
from lth_lib.portable import read_level, stored_folders
from lth_lib.progress import TrainingBar
from lth_lib.protocol import Experiment, architecture
from lth_lib.pruning import Mask, dense_mask, magnitude_prune, mask_counts, random_prune, remaining_fraction
from lth_lib.results import Record, Results
from lth_lib.seeding import derive_seed, generator
from lth_lib.store import (
    Level,
    State,
    check_writable,
    experiment_dir,
    load_level,
    save_level,
    write_description,
    write_tables,
)
from lth_lib.train import Member, TrainResult, train

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
    for t, seed in enumerate(exp.seeds):
        job.add("ticket", t, level, 0, Member(start[t], masks[t], seed))
    if level == 0:
        return job
    for control in exp.controls:
        for t, seed in enumerate(exp.seeds):
            for c in range(exp.control_trials):
                purpose = f"{control}/level{level}/{c}"
                if control == "reinit":
                    member = Member(glorot_init(exp.network, derive_seed(seed, purpose)), masks[t], seed)
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

    theta0 = [glorot_init(exp.network, seed) for seed in exp.seeds]
    masks: list[Mask] | None = [dense_mask(exp.network) for _ in exp.seeds]
    start: list[State] | None = theta0
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
                        save_level(directory, level, result)
            for level, result in zip(levels, stored):
                records += result.records
                if result.dense is not None:
                    dense = result.dense
                if level == 0 and exp.pruning.rewind_iteration:
                    start = result.rewind
                if result.next_masks is not None:
                    masks = result.next_masks
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
    masks_done = {lv: m for lv, m in level_masks.items() if lv in done}
    return Results(exp, records, directory, theta0, start, dense, masks_done)


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


def _level_masks(exp: Experiment, level: int, masks: list[Mask] | None, dense: list[State] | None
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
    start: list[State] | None,
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
        tickets = [res for (kind, _, lv, _), res in zip(job.labels, results) if kind == "ticket" and lv == level]
        trained_weights = [_to_state(r.final_weights) for r in tickets]
        stored = Level([r for r in records if r.level == level], trained=trained)
        if level == 0:
            stored.dense = trained_weights
            stored.rewind = [_to_state(r.snapshot) for r in tickets] if k else None
        if level == 0 or exp.pruning.strategy == "iterative":
            stored.next_masks = prune_tickets(exp, trained_weights, level_masks[level])
        out.append(stored)
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


def _to_state(state: State) -> State:
    return {name: value.cpu() for name, value in state.items()}
