"""The lottery loop: find winning tickets by iterative or one-shot pruning with rewinding,
and train the paper's controls beside them, level by level.

    results = run(paper_experiment("lenet300", iterations=1000, rounds=2))
    results.table()     # one row per member and level (see `lth_lib.results`)

- Winning ticket: the survivors reset to their values at the rewind iteration k
  (k = 0: the original init theta_0) and train from iteration k to the end.
- Random reinitialisation: the ticket's mask with a fresh Glorot init.
- Random pruning: a random mask with the ticket's per-layer counts, on the ticket's
  initial values.

`run` goes through each group of trials (`lth_lib.schedule`) job by job, the groups in
turn (every group's level 1 before any group's level 2). A job is a step that skips itself when the level store (`lth_lib.store`) holds its levels;
otherwise it prunes (each trial's ticket mask for its levels), trains the tickets and
their controls as one stack, and stores the levels. The dense level 0 is first looked
for in the shared dense store, where any experiment that trains the same networks alike
left it (`store.DenseStore`). Between jobs the loop carries what
the next one starts from: the masks, the trained dense networks, the rewind weights.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lth_lib.data import Dataset, load_dataset
from lth_lib.models import State, initial_state, parameter_shapes
from lth_lib.progress import TrainingBar
from lth_lib.protocol import Experiment, architecture, evaluation_grid, rewind_points, training_precision
from lth_lib.pruning import Mask, dense_mask, mask_counts, prune_tickets, random_prune, remaining_fraction
from lth_lib.results import Level, NotKept, Record, Results, concatenated, precision_of
from lth_lib.schedule import Job, Schedule
from lth_lib.seeding import derive_seed, generator
from lth_lib.store import Stores, open_stores
from lth_lib.train import Member, TrainResult, default_device, device_name, train


@dataclass(frozen=True)
class Label:
    """What one trained network is: a trial's ticket or one of its controls at a level."""

    kind: str  # "ticket" or a control ("reinit", "random_prune")
    trial: int
    level: int
    control: int  # which control network of its ticket (0 for tickets)


def _reinit(exp: Experiment, level: int, control: int, mask: Mask, start: State, seed: int) -> Member:
    return Member(initial_state(exp.network, derive_seed(seed, f"reinit/level{level}/{control}")), mask, seed)


def _random_prune(exp: Experiment, level: int, control: int, mask: Mask, start: State, seed: int) -> Member:
    return Member(start, random_prune(mask, generator(seed, f"random_prune/level{level}/{control}")), seed)


# The paper's controls: a new control is one entry (its name also in `protocol.CONTROLS`).
CONTROL_MEMBERS: dict[str, Callable[[Experiment, int, int, Mask, State, int], Member]] = {
    "reinit": _reinit,
    "random_prune": _random_prune,
}


def level_members(exp: Experiment, level: int, masks: list[Mask], start: list[State], trials: list[int] | None = None
                  ) -> list[tuple[Label, Member]]:  # fmt: skip
    """One level's networks: the ticket of each trial of `trials` (default all), with
    `masks` on `start` weights (both in `trials` order), then, beyond the dense level 0,
    the controls by kind, trial and index (the order they train and are recorded in)."""
    trials = list(range(exp.trials)) if trials is None else trials
    members = [
        (Label("ticket", t, level, 0), Member(start[i], masks[i], exp.seeds[t])) for i, t in enumerate(trials)
    ]
    for control in exp.controls if level else ():
        members += [
            (
                Label(control, t, level, c),
                CONTROL_MEMBERS[control](exp, level, c, masks[i], start[i], exp.seeds[t]),
            )
            for i, t in enumerate(trials)
            for c in range(exp.control_trials)
        ]
    return members


# Trained tickets are kept at every level (`Level.tickets`) for networks of at most this many
# parameters and buffers (LeNet-300-100, Section 4's ResNet-20, a user's small network; not
# the Conv networks or VGG-19): 8 MB of float32 per trial and level.
KEEP_TRAINED_BELOW = 2_000_000
NOT_KEPT_TICKETS = NotKept(
    "the trained ticket of this level is not kept: the results store keeps trained tickets only of networks of at "
    f"most {KEEP_TRAINED_BELOW:,} parameters, at levels trained since it keeps them, and the portable store none; "
    "export it with weights='rewind' and retrain it, or train the experiment in a results store"
)


class NothingStoredError(LookupError):
    """An experiment was to be drawn without training, and no store holds any of its levels."""


def run(
    exp: Experiment,
    data: Dataset | None = None,
    *,
    data_root: str | Path | None = None,
    results_root: str | Path | None = None,
    results_store: bool = True,
    device: str | torch.device | None = None,
    max_members: int | None = None,
    progress: bool = True,
    portable: str | Path | None = None,
    training: bool = True,
    deadline: float | None = None,
    precision: str | None = None,
    test_every: int | None = None,
) -> Results:
    """Run `exp`, reusing every finished level in the store and continuing from the first
    unfinished one. `data` (a Dataset) overrides loading from `data_root`/LTH_DATA.
    `max_members` networks train at once as one ensemble (default: `default_max_members`).
    `results_store=False` neither reads nor writes the results store.

    `portable`: a portable store (`lth_lib.portable`, e.g. the committed paper-scale
    results) whose levels come first; the results store adds the levels trained after
    them. `training=False` draws only what is stored: the levels from 0 up to the first
    one missing for some trial (`NothingStoredError` if there are none), without the data
    set. `deadline` (a `time.monotonic()` value): stop with `schedule.OutOfTime`, keeping
    every finished level, rather than start or go on with a level that would end after
    it. A trial that another process is training (`train_trials`) is waited for, then read.
    `precision`: what the networks train in (`protocol.PRECISIONS`; default
    `protocol.training_precision`: float32, except a network whose protocol says otherwise
    on a GPU); each level records it. `test_every`: where test metrics are computed besides
    each new minimum of validation loss (`train.train`; default `protocol.evaluation_grid`: every
    evaluation point, except a network whose protocol says otherwise on a GPU); recorded too.
    Nothing is written before a level is ready to train (`_ready`) or, if none is, before
    the tables: a refused run leaves nothing behind."""
    device = default_device(device)
    schedule = Schedule.of(exp, device, max_members)
    setup = _Run.open(exp, schedule, data=data, data_root=data_root, results_root=results_root,
                      results_store=results_store, portable=portable, device=device, progress=progress,
                      deadline=deadline, training=training, precision=precision, test_every=test_every)  # fmt: skip
    walks = _level_by_level(setup, [_walk(setup, group, training) for group in schedule.groups])
    results = _results(setup, walks)
    if training:
        setup.stores.make(schedule.max_members)
        results.write_tables()
    return results


def train_trials(
    exp: Experiment,
    trials: list[int],
    data: Dataset | None = None,
    *,
    data_root: str | Path | None = None,
    results_root: str | Path | None = None,
    device: str | torch.device | None = None,
    max_members: int | None = None,
    progress: bool = False,
    portable: str | Path | None = None,
    precision: str | None = None,
    test_every: int | None = None,
) -> None:
    """Train `trials` of `exp` into the results store, resuming from what it holds: what a
    cluster job runs (`lth_lib.cluster`). `trials` must be whole groups of
    `schedule.trial_groups(exp, max_members)`, so that they stack as they would in one `run`
    of the whole experiment with the same `max_members` and give its numbers; a trial
    another process is training is waited for. `data`, `portable`, `precision` and `test_every` are as in `run`. The
    tables are written by the `run` that reads the finished experiment. A refused call
    (trials that are not whole groups, data or a device it cannot train on, levels it cannot
    resume from) writes nothing."""
    device = default_device(device)
    schedule = Schedule.of(exp, device, max_members)
    mine = [group for group in schedule.groups if set(group) & set(trials)]
    if not mine or sorted(t for group in mine for t in group) != sorted(set(trials)):
        raise ValueError(
            f"trials {sorted(trials)} of {exp.network} {exp.pruning.strategy} are not whole groups of trials that "
            f"train together with max_members={schedule.max_members} ({schedule.groups}): a job trains whole groups"
        )
    setup = _Run.open(exp, schedule, data=data, data_root=data_root, results_root=results_root, results_store=True,
                      portable=portable, device=device, progress=progress, deadline=None, training=True,
                      precision=precision, test_every=test_every)  # fmt: skip
    _level_by_level(setup, [_walk(setup, group, True) for group in mine])


@dataclass
class _Run:
    """What every trial group of one run shares: the experiment (with the data copy it runs
    on), its schedule and stores, the data (loaded when first needed: drawing needs none),
    progress, deadline, the precision it trains in and where it computes test metrics."""

    exp: Experiment
    schedule: Schedule
    stores: Stores
    data: Dataset | None  # given, else loaded from data_root
    data_root: str | Path | None
    device: torch.device
    progress: bool
    deadline: float | None
    precision: str
    test_every: int | None
    loaded: Dataset | None = None
    bar: TrainingBar | None = None  # one progress bar over the run's training, once it trains

    @classmethod
    def open(
        cls,
        exp: Experiment,
        schedule: Schedule,
        *,
        data: Dataset | None,
        data_root: str | Path | None,
        results_root: str | Path | None,
        results_store: bool,
        portable: str | Path | None,
        device: torch.device,
        progress: bool,
        deadline: float | None,
        training: bool,
        precision: str | None,
        test_every: int | None,
    ) -> _Run:
        """The run of `exp` by `schedule`, with its stores opened (`store.open_stores`)
        before any work, nothing written yet (an unknown precision is refused first)."""
        precision = training_precision(exp.network, device.type, precision)
        test_every = evaluation_grid(exp.network, device.type, test_every)
        stores = open_stores(exp, data=data, data_root=data_root, root=results_root, results_store=results_store,
                             portable=portable, training=training)  # fmt: skip
        return cls(
            stores.exp, schedule, stores, data, data_root, device, progress, deadline, precision, test_every
        )

    def dataset(self) -> Dataset:
        """The data on the training device, loaded when first asked for."""
        if self.loaded is None:
            self.loaded = self.data.to(self.device) if self.data is not None else load_dataset(
                architecture(self.exp.network).dataset, self.data_root, self.device)  # fmt: skip
        return self.loaded

    def label(self, group: list[int]) -> str:
        """The trials of `group`, as the progress bar names them ("" if they are all of them)."""
        if len(self.schedule.groups) == 1:
            return ""
        return f"trial{'s' if len(group) > 1 else ''} {group[0]}" + (
            f"-{group[-1]}" if len(group) > 1 else ""
        )

    def training_bar(self, iterations: int) -> TrainingBar | None:
        """The run's progress bar (None without progress), grown by the `iterations` that a
        trial group starting to train still needs; made by the first."""
        if self.progress and self.bar is None:
            self.bar = TrainingBar(f"{self.exp.network} {self.exp.pruning.strategy}", iterations)
        elif self.bar is not None:
            self.bar.grow(iterations)
        return self.bar


@dataclass
class _Walk:
    """What walking one trial group's levels gave: per level done its records and ticket
    masks, and what the next level starts from (lists in the group's trial order)."""

    exp: Experiment
    trials: list[int]
    dense: list[State] | NotKept | None = None  # the trained dense networks (level 0)
    rewind: list[State] | NotKept | None = None  # late rewinding: the weights at iteration k (level 0)
    next_masks: list[Mask] | NotKept | None = None  # iterative: the masks pruned from the last level
    done: list[int] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    masks: dict[int, list[Mask] | NotKept] = field(default_factory=dict)  # each level's ticket masks
    tickets: dict[int, list[State] | NotKept] = field(default_factory=dict)  # each level's trained tickets
    precisions: dict[int, str] = field(default_factory=dict)  # what each level trained in
    counted: bool = False  # whether the run's progress bar counts its training

    @functools.cached_property
    def theta0(self) -> list[State]:
        """Each trial's initial weights, from its seed."""
        return [initial_state(self.exp.network, self.exp.seeds[t]) for t in self.trials]

    @property
    def start(self) -> list[State] | NotKept:
        """What tickets are rewound to: theta_0, or from level 1 on the weights at iteration k."""
        return self.rewind if self.exp.pruning.rewind_iteration and self.done else self.theta0

    def ticket_masks(self, level: int) -> list[Mask] | NotKept:
        """Each trial's ticket mask at `level` (the next level to finish, or one of its job):
        every weight at level 0; iterative, the masks pruned from the level before;
        one-shot, the dense network pruned `level` rounds' worth at once (not kept where
        the dense networks are not)."""
        if level in self.masks:
            return self.masks[level]
        if not level:
            masks = [dense_mask(self.exp.network) for _ in self.trials]
        elif self.exp.pruning.strategy == "iterative":
            masks = self.next_masks
        elif isinstance(self.dense, NotKept):
            masks = self.dense
        else:
            masks = prune_tickets(self.exp, self.dense, self.masks[0], rounds=level)
        self.masks[level] = masks
        return masks

    def add(self, level: int, stored: Level) -> None:
        """Take in a finished level (stored or just trained) and what it passes on."""
        self.ticket_masks(level)
        self.done.append(level)
        self.records += stored.records
        if level == 0:
            self.dense, self.rewind = stored.dense, stored.rewind
        trained = stored.dense if level == 0 else stored.tickets
        self.tickets[level] = NOT_KEPT_TICKETS if trained is None else trained
        self.precisions[level] = precision_of(stored.trained)
        self.next_masks = stored.next_masks


def _walk(setup: _Run, trials: list[int], training: bool) -> Generator[None, None, _Walk]:
    """One trial group's jobs in order, each a step that skips itself when the store holds
    its levels, else (if `training`) prunes, trains and stores them; without training the
    walk stops at the first level missing. It pauses (yields) after each job it trains, so
    that `_level_by_level` takes the groups in turn. Once a job is ready to train
    (`_ready`), the walk makes the results folder and holds the trials' locks in the
    results store: a trial another process is training is waited for, then read."""
    store = setup.stores.levels(trials)
    walked = _Walk(setup.exp, trials)
    jobs = setup.schedule.jobs[len(trials)]
    locked = False
    with contextlib.ExitStack() as held:
        for j, job in enumerate(jobs):
            stored = [store.get(level) for level in job.levels]
            if None in stored and not training:
                break
            if None in stored and not locked:
                _ready(setup, walked, job)
                setup.stores.make(setup.schedule.max_members)
                held.enter_context(store.lock())
                locked = True
                # read again: another process may have trained them while the lock was waited for
                stored = [store.get(level) for level in job.levels]
            new = None in stored
            if new:
                remaining = sum(later.iterations for later in jobs[j:])
                stored = _dense(setup, walked, job, remaining) if job.levels == [0] else _train_job(
                    setup, walked, job, remaining)  # fmt: skip
            for level, level_stored in zip(job.levels, stored):
                walked.add(level, level_stored)
                if new:
                    store.put(level, level_stored)
            if new:
                yield
    return walked


def _level_by_level(setup: _Run, walks: list[Generator[None, None, _Walk]]) -> list[_Walk]:
    """Walk the trial groups a trained job at a time in turn, so every group trains its
    level 1 before any trains its level 2: a run stopped early (a deadline, a killed
    process) leaves whole levels, each trial's stored as it finishes. The walks' results,
    in order; the progress bar is closed at the end, however it ends."""
    done: list[_Walk | None] = [None] * len(walks)
    try:
        while None in done:
            for i, walk in enumerate(walks):
                if done[i] is None:
                    try:
                        next(walk)
                    except StopIteration as end:
                        done[i] = end.value
    finally:
        for walk in walks:
            walk.close()
        if setup.bar is not None:
            setup.bar.close()
    return done


def _ready(setup: _Run, walked: _Walk, job: Job) -> None:
    """Refuse a job that cannot train before anything is written for it: what it starts
    from is not kept (`results.NotKeptError`: a portable store's level without the masks
    or weights the next needs), or the data cannot be loaded onto the device."""
    for level in job.levels:
        level_members(setup.exp, level, walked.ticket_masks(level), walked.start, walked.trials)
    setup.dataset()


def _dense(setup: _Run, walked: _Walk, job: Job, remaining: int) -> list[Level]:
    """Level 0 of the walk's trials: their dense networks as another experiment that trains
    them alike trained them (the shared dense store, `store.DenseStore`), else trained here
    and added to it; with the masks this experiment prunes from them."""
    dense = setup.stores.dense(walked.trials)
    if dense is None:
        return _train_job(setup, walked, job, remaining)
    with dense.lock():
        found = dense.get(setup.exp.pruning.rewind_iteration)
        if found is None:
            [trained] = _train_job(setup, walked, job, remaining)
            dense.put(trained)
            return [trained]
    found.next_masks = prune_tickets(setup.exp, found.dense, walked.ticket_masks(0))
    return [found]


def _train_job(setup: _Run, walked: _Walk, job: Job, remaining: int) -> list[Level]:
    """Prune and train one job's levels of the walk's trials as one stack (in stacks of at
    most `max_members`), `remaining` iterations before the group is done; one Level per
    level."""
    exp, trials, max_members = setup.exp, walked.trials, setup.schedule.max_members
    masks = {level: walked.ticket_masks(level) for level in job.levels}  # prune
    members = [
        m for level in job.levels for m in level_members(exp, level, masks[level], walked.start, trials)
    ]
    if not walked.counted:  # the run's bar counts all the group's training still to do
        walked.counted = True
        setup.training_bar(remaining)
    progress = setup.schedule.watch(job, setup.bar, setup.deadline, setup.label(trials))
    data = setup.dataset()
    # level 0 keeps its weights at every rewind point and at this experiment's k (`store.DenseStore`)
    snapshots = tuple(sorted({*rewind_points(exp.training.iterations), exp.pruning.rewind_iteration} - {0}))
    snapshots = snapshots if job.levels == [0] else ()
    started, results = time.monotonic(), []
    for at in range(0, len(members), max_members):
        stack = [member for _, member in members[at : at + max_members]]
        results += train(exp.network, stack, data, exp.training, job.first, snapshots, progress, setup.precision,
                         setup.test_every)  # fmt: skip
    trained = {
        "seconds": round(time.monotonic() - started, 1), "levels_in_job": len(job.levels), "networks": len(members),
        "at_once": min(max_members, len(members)), "device": device_name(data.train_x.device),
        "torch": str(torch.__version__), "trials": list(trials), "precision": setup.precision,
        "test_every": setup.test_every,
    }  # fmt: skip
    ours = {level: [(label, member, result) for (label, member), result in zip(members, results) if label.level == level]
            for level in job.levels}  # fmt: skip
    tickets = {level: [{name: value.cpu() for name, value in result.final_weights.items()}
                       for label, _, result in ours[level] if label.kind == "ticket"] for level in job.levels}  # fmt: skip
    pruned = {level: prune_tickets(exp, tickets[level], masks[level]) for level in job.levels
              if level == 0 or exp.pruning.strategy == "iterative"}  # fmt: skip
    k = exp.pruning.rewind_iteration
    keep = sum(shape.numel() for shape in parameter_shapes(exp.network).values()) <= KEEP_TRAINED_BELOW
    return [
        _level(level, ours[level], tickets[level], pruned.get(level), trained, k, keep)
        for level in job.levels
    ]


def _level(level: int, ours: list[tuple[Label, Member, TrainResult]], tickets: list[State],
           next_masks: list[Mask] | None, trained: dict, rewind_iteration: int, keep_tickets: bool) -> Level:  # fmt: skip
    """One trained level as the store keeps it: its records, the masks pruned from its
    tickets (level 0, iterative), at level 0 the trained dense networks, their weights at
    every rewind point and at `rewind_iteration` (late rewinding) as the rewind weights,
    and above level 0 the trained tickets, if `keep_tickets`."""
    stored = Level(
        [_record(label, member.mask, result) for label, member, result in ours], next_masks, trained=trained,
        tickets=tickets if level and keep_tickets else None,
    )  # fmt: skip
    if level == 0:
        stored.dense = tickets
        stored.snapshots = [{k: {name: value.cpu() for name, value in weights.items()} for k, weights in result.snapshots.items()}
                            for _, _, result in ours]  # fmt: skip
        if rewind_iteration:
            stored.rewind = [snapshots[rewind_iteration] for snapshots in stored.snapshots]
    return stored


def _record(label: Label, mask: Mask, r: TrainResult) -> Record:
    return Record(
        kind=label.kind,
        trial=label.trial,
        level=label.level,
        control_index=label.control,
        percent_remaining=100 * remaining_fraction(mask),
        layer_remaining=mask_counts(mask),
        early_stop_iteration=r.early_stop_iteration,
        early_stop_val_loss=r.early_stop_val_loss,
        early_stop_val_acc=r.early_stop_val_acc,
        early_stop_test_acc=r.early_stop_test_acc,
        final_test_acc=r.final_test_acc,
        curve=r.curve,
    )


def _results(setup: _Run, walks: list[_Walk]) -> Results:
    """The walks of every trial group as one `Results`: the levels every trial has, records
    in the order of one stack of all trials (by level, kind, trial, control)."""
    exp, stores = setup.exp, setup.stores
    levels = min(len(w.done) for w in walks)
    order = {kind: i for i, kind in enumerate(("ticket", *exp.controls))}
    records = sorted((r for w in walks for r in w.records if r.level < levels),
                     key=lambda r: (r.level, order[r.kind], r.trial, r.control_index))  # fmt: skip
    if not records:
        raise NothingStoredError(
            f"no level of {exp.network} {exp.pruning.strategy} ({exp.identity()}) is stored in "
            f"{' or '.join(str(p) for p in (stores.committed, stores.directory) if p is not None)}; "
            "run it with training=True"
        )
    masks = {level: concatenated([w.masks[level] for w in walks]) for level in range(levels)}
    tickets = {level: concatenated([w.tickets[level] for w in walks]) for level in range(levels)}
    precision = ", ".join(sorted({w.precisions[level] for w in walks for level in range(levels)}))
    return Results(exp, records, stores.directory, concatenated([w.theta0 for w in walks]),
                   concatenated([w.start for w in walks]), concatenated([w.dense for w in walks]), masks,
                   tickets, precision)  # fmt: skip
