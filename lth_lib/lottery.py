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

Trials are independent, and train in groups (`trial_groups`): as many whole trials as fit
in `max_members` networks stack together, and no stack holds two groups' networks. So a
group trains the same arithmetic whether it runs in one process beside the others or in
its own (`train_trials`, what a cluster job runs: `lth_lib.cluster`), and gives the same
numbers bit for bit on one machine.
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
    concatenated,
    experiment_dir,
    load_level,
    save_level,
    trial_locks,
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


def level_size(exp: Experiment, level: int, trials: int | None = None) -> int:
    """How many networks `level_job` trains at `level` for `trials` trials (default: all):
    each trial's ticket and, beyond the dense level 0, its controls."""
    trials = exp.trials if trials is None else trials
    return trials * (1 if level == 0 else 1 + len(exp.controls) * exp.control_trials)


def trial_groups(exp: Experiment, max_members: int) -> list[list[int]]:
    """The trials that train together: as many whole trials as `max_members` networks hold
    at a pruned level (at least one: a trial larger than that trains in several stacks of
    its own networks)."""
    per_group = max(1, max_members // level_size(exp, 1, trials=1))
    return [list(range(exp.trials))[i : i + per_group] for i in range(0, exp.trials, per_group)]


def level_job(exp: Experiment, level: int, masks: list[Mask], start: list[dict], job: Job | None = None,
              trials: list[int] | None = None) -> Job:  # fmt: skip
    """Add one level's tickets (one per trial of `trials`, default all, with `masks` on
    `start` weights, both in `trials` order) and, beyond the dense level 0, its controls to
    `job` (a new one if None)."""
    job = job or Job()
    trials = list(range(exp.trials)) if trials is None else trials
    for i, t in enumerate(trials):
        job.add("ticket", t, level, 0, Member(start[i], masks[i], exp.seeds[t]))
    if level == 0:
        return job
    for control in exp.controls:
        for i, t in enumerate(trials):
            seed = exp.seeds[t]
            for c in range(exp.control_trials):
                purpose = f"{control}/level{level}/{c}"
                if control == "reinit":
                    member = Member(glorot_init(exp.network, derive_seed(seed, purpose)), masks[i], seed)
                else:
                    member = Member(start[i], random_prune(masks[i], generator(seed, purpose)), seed)
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


def plan(exp: Experiment, max_members: int = DEFAULT_MAX_MEMBERS, trials: int | None = None) -> list[list[int]]:
    """The levels trained together in each job of a group of `trials` trials (default: all), in order."""
    levels = list(range(1, exp.pruning.rounds + 1))
    if exp.pruning.strategy == "iterative":
        return [[0]] + [[level] for level in levels]
    group = max(1, max_members // level_size(exp, 1, trials))
    return [[0]] + [levels[i : i + group] for i in range(0, len(levels), group)]


class OutOfTime(RuntimeError):
    """Training stopped: the level under way would not finish before the deadline."""


class NothingStoredError(LookupError):
    """An experiment was to be drawn without training, and no store holds any of its levels."""


@dataclass
class _Setup:
    """What every trial group of one run shares."""

    exp: Experiment  # with the data copy it runs on
    device: torch.device
    max_members: int
    directory: Path | None  # the results store's folder (None: not stored)
    committed: Path | None  # the portable store's folder (None: none)
    data: Dataset | None
    data_root: str | Path | None
    loaded: list[Dataset] = field(default_factory=list)

    def get_data(self) -> Dataset:
        """The data set on the device, loaded once, when first needed."""
        if not self.loaded:
            dataset = architecture(self.exp.network).dataset
            self.loaded.append(self.data.to(self.device) if self.data is not None
                               else load_dataset(dataset, self.data_root, self.device))  # fmt: skip
        return self.loaded[0]


def _setup(exp, data, data_root, results_root, store, device, max_members, portable, train) -> _Setup:
    exp = dataclasses.replace(exp, data_copy=_data_copy(exp, data, data_root, portable, train))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_members = default_max_members(exp.network, device) if max_members is None else max_members
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    directory = experiment_dir(exp, results_root) if store else None
    if directory is not None and train:
        check_writable(directory)
        write_description(directory, exp, max_members)
    committed = experiment_dir(exp, portable) if portable is not None else None
    return _Setup(exp, device, max_members, directory, committed, data, data_root)


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
    missing for some trial (`NothingStoredError` if there are none), without the data set.
    `deadline` (a `time.monotonic()` value): stop with `OutOfTime`, keeping every finished
    level, rather than start or go on with a level that would end after it. A trial that
    another process is training (`train_trials`) is waited for, then read."""
    setup = _setup(exp, data, data_root, results_root, store, device, max_members, portable, train)
    exp = setup.exp
    groups = trial_groups(exp, setup.max_members)
    walks = [_group(setup, group, train, progress and _label(exp, group, groups), deadline) for group in groups]
    levels = min(len(w.done) for w in walks)  # the levels every trial has
    order = {kind: i for i, kind in enumerate(("ticket", *exp.controls))}
    records = sorted((r for w in walks for r in w.records if r.level < levels),
                     key=lambda r: (r.level, order[r.kind], r.trial, r.control_index))  # fmt: skip
    if not records:
        raise NothingStoredError(
            f"no level of {exp.network} {exp.pruning.strategy} ({exp.identity()}) is stored in "
            f"{' or '.join(str(p) for p in (setup.committed, setup.directory) if p is not None)}; run it with train=True"
        )
    if setup.directory is not None and train:
        write_tables(setup.directory, records)
    masks = {level: concatenated([w.masks[level] for w in walks]) for level in range(levels)}
    return Results(exp, records, setup.directory, concatenated([w.theta0 for w in walks]),
                   concatenated([w.start for w in walks]), concatenated([w.dense for w in walks]), masks)  # fmt: skip


def train_trials(
    exp: Experiment,
    trials: list[int],
    data: Dataset | None = None,
    data_root: str | Path | None = None,
    results_root: str | Path | None = None,
    device: str | torch.device | None = None,
    max_members: int | None = None,
    progress: bool = False,
    portable: str | Path | None = None,
) -> None:
    """Train `trials` of `exp` into the results store, resuming from what it holds: what a
    cluster job runs (`lth_lib.cluster`). `trials` must be whole groups of
    `trial_groups(exp, max_members)`, so that they stack as they would in one `run` of the
    whole experiment with the same `max_members` and give its numbers; a trial another
    process is training is waited for. `data` and `portable` are as in `run`. The tables are
    written by the `run` that reads the finished experiment."""
    setup = _setup(exp, data, data_root, results_root, True, device, max_members, portable, True)
    groups = trial_groups(setup.exp, setup.max_members)
    mine = [group for group in groups if set(group) & set(trials)]
    if sorted(t for group in mine for t in group) != sorted(set(trials)):
        raise ValueError(
            f"trials {sorted(trials)} of {exp.network} {exp.pruning.strategy} are not whole groups of trials that "
            f"train together with max_members={setup.max_members} ({groups}): a job trains whole groups"
        )
    for group in mine:
        _group(setup, group, True, progress and _label(setup.exp, group, groups), None)


def _label(exp: Experiment, group: list[int], groups: list[list[int]]) -> str:
    """The progress bar's name for training `group`."""
    trials = "" if len(groups) == 1 else f" trial{'s' if len(group) > 1 else ''} {group[0]}" + (
        f"-{group[-1]}" if len(group) > 1 else "")  # fmt: skip
    return f"{exp.network} {exp.pruning.strategy}{trials}"


@dataclass
class _Walk:
    """What walking one trial group's levels gave: per level done, its records, and the
    group's weights and masks (lists in the group's trial order)."""

    done: list[int]
    records: list[Record]
    theta0: list[State]
    start: list[State] | None
    dense: list[State] | None
    masks: dict[int, list[Mask] | None]


def _group(setup: _Setup, trials: list[int], train: bool, bar_name: str | bool, deadline: float | None) -> _Walk:
    """Walk one trial group's levels, training what is missing if `train`. Where another
    process may train the same trials (a results store), read what is stored first, and
    train only while holding the trials' locks, after reading again what the other
    process finished meanwhile."""
    if not train or setup.directory is None:
        return _walk(setup, trials, train, bar_name, deadline)
    stored = _walk(setup, trials, False, bar_name, deadline)
    if len(stored.done) == setup.exp.pruning.rounds + 1:
        return stored
    with trial_locks(setup.directory, trials):
        return _walk(setup, trials, True, bar_name, deadline)


def _walk(setup: _Setup, trials: list[int], train: bool, bar_name: str | bool, deadline: float | None) -> _Walk:
    """One trial group's levels in order: each read from the portable store or the results
    store, else (if `train`) trained and stored, else the walk stops there."""
    exp, directory, committed = setup.exp, setup.directory, setup.committed
    theta0 = [glorot_init(exp.network, exp.seeds[t]) for t in trials]
    masks: list[Mask] | None = [dense_mask(exp.network) for _ in trials]
    start: list[State] | None = theta0
    dense, records, level_masks, done = None, [], {}, []
    stale, diverged = directory is None and committed is None, False
    jobs = plan(exp, setup.max_members, len(trials))
    bar = None
    try:
        for j, levels in enumerate(jobs):
            for level in levels:
                level_masks[level] = _level_masks(exp, level, masks, dense, len(trials))
            stored = []
            for level in [] if stale else levels:
                ours = read_level(committed, level) if committed is not None else None
                ours = ours.select(trials) if ours is not None else None
                local = load_level(directory, level, trials) if directory is not None and not diverged else None
                if ours is not None and local is not None and ours.records != local.records:
                    diverged = True  # the results store's later levels grew from other results
                stored.append(ours or local)
            if not stored or None in stored:
                if not train:
                    break
                stale = True  # every later job depends on this one: redo them all
                if bar_name and bar is None:  # one bar over all the group's training still to do
                    bar = TrainingBar(bar_name, job_iterations(exp, jobs[j:], setup.max_members, len(trials)))
                stored = _train_job(setup, trials, levels, level_masks, start, bar, deadline)
                if directory is not None:
                    for level, result in zip(levels, stored):
                        save_level(directory, level, result)
            for level, result in zip(levels, stored):
                records += result.records
                done.append(level)
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
    return _Walk(done, records, theta0, start, dense, {level: level_masks[level] for level in done})


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


def _level_masks(exp: Experiment, level: int, masks: list[Mask] | None, dense: list[State] | None, trials: int
                 ) -> list[Mask] | None:  # fmt: skip
    """Each of `trials` trials' ticket mask at `level`: the running mask (iterative pruning,
    or the dense level 0), or the trained dense network pruned `level` rounds' worth at
    once; None where the store does not keep what they come from."""
    if level == 0 or exp.pruning.strategy == "iterative":
        return masks
    if dense is None:
        return None
    return prune_tickets(exp, dense, [dense_mask(exp.network)] * trials, rounds=level)


def _train_job(
    setup: _Setup,
    trials: list[int],
    levels: list[int],
    level_masks: dict[int, list[Mask]],
    start: list[State] | None,
    bar: TrainingBar | None,
    deadline: float | None,
) -> list[Level]:
    """Train one job's levels of `trials` together; one stored Level per level."""
    exp, max_members = setup.exp, setup.max_members
    missing = [level for level in levels if level_masks[level] is None] or ([] if start is not None else levels)
    if missing:
        raise RuntimeError(
            f"{exp.network} {exp.pruning.strategy}: the stored levels before level {missing[0]} do not keep the masks "
            f"or weights it starts from (a portable store keeps large ones only at its last level); "
            f"train it from level 0 in an empty results store"
        )
    job = Job()
    for level in levels:
        level_job(exp, level, level_masks[level], start, job, trials)
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

    data = setup.get_data()
    started = time.monotonic()
    records, results = run_job(exp, job, data, first, k if levels == [0] and k else None, max_members, progress)
    trained = {
        "seconds": round(time.monotonic() - started, 1), "levels_in_job": len(levels), "networks": len(job.members),
        "at_once": min(max_members, len(job.members)), "device": device_name(data.train_x.device),
        "torch": str(torch.__version__), "trials": list(trials),
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


def job_iterations(exp: Experiment, jobs: list[list[int]], max_members: int, trials: int | None = None) -> int:
    """The training iterations `jobs` of a group of `trials` trials (default: all) take,
    counting each chunk of `max_members` networks."""
    total = 0
    for levels in jobs:
        chunks = -(-sum(level_size(exp, level, trials) for level in levels) // max_members)
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
