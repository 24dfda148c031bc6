"""How an experiment's training is cut into stacks, and when to stop it.

- A *level* of a trial is its ticket and, beyond the dense level 0, the control networks
  beside it (`level_size`).
- Trials train in *groups* (`trial_groups`): as many whole trials as `max_members`
  networks hold, and no stack holds two groups' networks. So a group trains the same
  arithmetic whether it runs in one process beside the others or in its own (a cluster
  job), and gives the same numbers bit for bit on one machine. Stacks of different sizes
  do not: PyTorch's vectorised kernels round a tensor's tail differently.
- A group's levels train in *jobs* (`plan`): iterative pruning one level per job (each
  depends on the last); a one-shot sweep as many levels per job as `max_members` allows.
- A *deadline* stops training with `OutOfTime` before a job that would not finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lth_lib.protocol import Experiment, architecture

DEFAULT_MAX_MEMBERS = 16
GPU_MAX_MEMBERS = 40  # a whole paper-scale level (5 tickets and 30 controls) in one stack


def default_max_members(
    network: str, device: str | torch.device, trial_networks: int = GPU_MAX_MEMBERS
) -> int:
    """How many networks a job trains at once unless told. On a GPU, GPU_MAX_MEMBERS for
    fully connected networks: one step of 35 stacked LeNets costs little more than one of
    16 (benchmarks/). Convolutional networks (a module of the user's or Section 4's
    included) train one trial's networks at a time (`trial_networks`, `level_size` of one
    trial; at most GPU_MAX_MEMBERS), so that the trials of a level finish, and are stored,
    one after another: a paper-scale Conv level (35 networks, 20K-30K iterations) does not
    fit one call of a GPU slot; one trial's 7 networks do. On a CPU, DEFAULT_MAX_MEMBERS,
    except for convolutional networks, which train one at a time: there the grouped
    convolution that stacks them is slower per network than a single network's (Conv-2 on
    2 cores, 5 stacked ran at 0.78x the reference loop's network-steps/s, one alone at
    1.24x)."""
    convolutional = architecture(network).convolutional
    if torch.device(device).type == "cuda":
        return min(trial_networks, GPU_MAX_MEMBERS) if convolutional else GPU_MAX_MEMBERS
    return 1 if convolutional else DEFAULT_MAX_MEMBERS


def level_size(exp: Experiment, level: int, trials: int | None = None) -> int:
    """How many networks train at `level` for `trials` trials (default: all): each trial's
    ticket and, beyond the dense level 0, its controls."""
    trials = exp.trials if trials is None else trials
    return trials * (1 if level == 0 else 1 + len(exp.controls) * exp.control_trials)


def trial_groups(exp: Experiment, max_members: int) -> list[list[int]]:
    """The trials that train together: as many whole trials as `max_members` networks hold
    at a pruned level (at least one: a trial larger than that trains in several stacks of
    its own networks)."""
    per_group = max(1, max_members // level_size(exp, 1, trials=1))
    return [list(range(exp.trials))[i : i + per_group] for i in range(0, exp.trials, per_group)]


def plan(
    exp: Experiment, max_members: int = DEFAULT_MAX_MEMBERS, trials: int | None = None
) -> list[list[int]]:
    """The levels trained together in each job of a group of `trials` trials (default: all), in order."""
    levels = list(range(1, exp.pruning.rounds + 1))
    if exp.pruning.strategy == "iterative":
        return [[0]] + [[level] for level in levels]
    per_job = max(1, max_members // level_size(exp, 1, trials))
    return [[0]] + [levels[i : i + per_job] for i in range(0, len(levels), per_job)]


def first_iteration(exp: Experiment, levels: list[int]) -> int:
    """Where a job's training starts: the dense level 0 at iteration 0, tickets at the
    rewind iteration k."""
    return 0 if levels == [0] else exp.pruning.rewind_iteration


def job_iterations(
    exp: Experiment, jobs: list[list[int]], max_members: int, trials: int | None = None
) -> int:
    """The training iterations `jobs` of a group of `trials` trials (default: all) take,
    counting each stack of at most `max_members` networks."""
    total = 0
    for levels in jobs:
        stacks = -(-sum(level_size(exp, level, trials) for level in levels) // max_members)
        total += stacks * (exp.training.iterations - first_iteration(exp, levels))
    return total


@dataclass(frozen=True)
class Job:
    """Levels of a group of trials that train together, as one stack (or several, of at
    most `max_members` networks each)."""

    levels: list[int]
    first: int  # the iteration training starts at (`first_iteration`)
    iterations: int  # the training iterations it takes, counting each stack
    networks: int  # how many networks it trains

    @property
    def name(self) -> str:
        return (
            f"level {self.levels[0]}"
            if len(self.levels) == 1
            else f"levels {self.levels[0]}-{self.levels[-1]}"
        )


@dataclass(frozen=True)
class Schedule:
    """How one run cuts an experiment's training: `max_members` networks at once, the
    trial groups, and the jobs of a group by its number of trials."""

    exp: Experiment
    max_members: int
    groups: list[list[int]]
    jobs: dict[int, list[Job]]

    @classmethod
    def of(cls, exp: Experiment, device: torch.device, max_members: int | None = None) -> Schedule:
        """`exp`'s schedule with `max_members` networks at once if given (at least 1), else
        `default_max_members` on `device`."""
        if max_members is None:
            max_members = default_max_members(exp.network, device, level_size(exp, 1, trials=1))
        if max_members < 1:
            raise ValueError(f"max_members must be at least 1, got {max_members}")
        groups = trial_groups(exp, max_members)
        jobs = {
            trials: [Job(levels, first_iteration(exp, levels), job_iterations(exp, [levels], max_members, trials),
                         sum(level_size(exp, level, trials) for level in levels))
                     for levels in plan(exp, max_members, trials)]
            for trials in {len(group) for group in groups}
        }  # fmt: skip
        return cls(exp, max_members, groups, jobs)

    def watch(self, job: Job, bar, deadline: float | None, trials: str = "") -> Callable[[int, dict], None]:
        """The progress callback of training `job` (of the trial group `trials` names): it
        moves `bar` (a `progress.TrainingBar`, or None) and stops at `deadline`
        (`deadline_watch`; None: never)."""
        nets = f"{job.networks} net{'s' if job.networks != 1 else ''}"
        who = f"{trials} · " if trials else ""
        watchers = [bar.job(f"{who}{job.name}/{self.exp.pruning.rounds} ({nets})", job.first)] if bar else []
        if deadline is not None:
            watchers.append(deadline_watch(deadline, job.iterations, job.first, job.name))

        def progress(iteration: int, metrics: dict) -> None:
            for watch in watchers:
                watch(iteration, metrics)

        return progress


class OutOfTime(RuntimeError):
    """Training stopped: the level under way would not finish before the deadline."""


def deadline_watch(deadline: float, total: int, first: int, name: str) -> Callable[[int, dict], None]:
    """A progress callback that raises OutOfTime at an evaluation point once a job (`total`
    iterations, in stacks each starting at `first`) is past the `time.monotonic()`
    `deadline` or, judged on at least 5 s or 2% of it, would end after it. The rate is
    measured from the first evaluation point on, so that set-up (data, a CUDA graph's
    capture) does not count as slow training (2% into a 23 s level on a GPU, counting it
    made the level look like a 2-minute one)."""
    started, done, last = None, 0, first

    def check(iteration: int, metrics: dict) -> None:
        nonlocal started, done, last
        now = time.monotonic()
        if started is None:
            started = now
        if iteration < last:  # the next stack of members started
            last = first
        done, last = done + iteration - last, iteration
        judged = done > 0 and (now - started >= 5 or done >= total / 50)
        finish = now + (now - started) * (total - done) / done if judged else now
        if finish > deadline:
            raise OutOfTime(
                f"{name} would end {finish - deadline:.0f} s after the deadline ({done:,} of {total:,} iterations done)"
            )

    return check
