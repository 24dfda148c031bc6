"""The results store: every finished level of an experiment on disk, found again by hash.

    <results root>/<network>-<strategy>-<identity>/
        experiment.json          the Experiment's fields, its identity, how it was run
        trial_0/level_000.pt     tensors a later level of trial 0 needs (masks, rewind/dense weights)
        trial_0/level_000.json   that trial's records and curves at that level, and the .pt's sha256
        trial_0/lock             held by the process training trial 0 (`trial_locks`)
        trial_1/...
        records.csv, curves.csv  tidy tables of every trial and level, written when a run ends

The trials of an experiment are independent, so each has its own files: processes on
different machines can train different trials into one results root on a shared
filesystem at once, and a level is assembled from its trials' files when read. Each file
is written to a temporary name and renamed, and a trial's level counts as finished only
when its JSON parses and the sha256 it names matches its tensor file: a torn file is never
taken as finished. A run killed at any moment is rerun from the first unfinished job; the
jobs (which levels and trials train together) are fixed by the experiment and
`max_members`, so a resumed run computes exactly what an uninterrupted one does.

Stores written before trials had their own files hold one `level_000.{json,pt}` pair for
all trials at the top of the folder; they are read as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_lib.paths import PROJECT, env_path
from lth_lib.protocol import Experiment
from lth_lib.pruning import Mask, pack_mask, unpack_mask
from lth_lib.results import Record, curves_table, records_table

RESULTS_ENV = "LTH_RESULTS"
STORE_VERSION = 1


def results_root(root: str | Path | None = None) -> Path:
    """The `root` argument, else LTH_RESULTS (a relative one from the project root), else
    `results/` in the project (git-ignored), else ~/.cache/lth/results outside a checkout."""
    if root is not None:
        return Path(root)
    from_env = env_path(RESULTS_ENV)
    if from_env is not None:
        return from_env
    return PROJECT / "results" if PROJECT else Path.home() / ".cache" / "lth" / "results"


def check_writable(directory: Path) -> None:
    """Raise a clear error unless an experiment's `directory` can be created and written to."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write the experiment's folder {directory} ({error.strerror}); "
            f"pass results_root= or set {RESULTS_ENV} to a writable folder"
        ) from None


def experiment_dir(exp: Experiment, root: str | Path | None = None) -> Path:
    """The directory that holds (or will hold) `exp`'s results."""
    return results_root(root) / f"{exp.network}-{exp.pruning.strategy}-{exp.identity()}"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


State = dict[str, torch.Tensor]


@dataclass
class Level:
    """One finished level of some trials: their records, and what their levels after it
    start from (None where this level does not keep it). Each list holds one entry per
    trial in `trials` order."""

    records: list[Record]
    next_masks: list[Mask] | None = None  # each trial's ticket mask for the next level
    dense: list[State] | None = None  # level 0: each trial's trained dense network
    rewind: list[State] | None = None  # level 0, late rewinding: each trial's weights at iteration k
    trained: dict | None = None  # how it was trained: seconds, networks, at once, device, torch, trials

    @property
    def trials(self) -> list[int]:
        """The trials this level holds (every trial has a ticket record), in order."""
        return sorted({r.trial for r in self.records})

    def select(self, trials: Sequence[int]) -> Level | None:
        """The level of `trials` only (None if it lacks one of them)."""
        mine = self.trials
        if not set(trials) <= set(mine):
            return None
        at = [mine.index(t) for t in trials]

        def pick(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in at]

        records = [r for t in trials for r in self.records if r.trial == t]
        return Level(records, pick(self.next_masks), pick(self.dense), pick(self.rewind), self.trained)

    @classmethod
    def join(cls, levels: list[Level]) -> Level:
        """The trials of `levels` side by side, each list None if any of them lacks it.
        `trained` is the one record where one job trained them all, else a summary."""

        def joined(name: str) -> list | None:
            return concatenated([getattr(level, name) for level in levels])

        records = [r for level in levels for r in level.records]
        return cls(records, joined("next_masks"), joined("dense"), joined("rewind"), _joined_training(levels))

    def tensors(self) -> dict:
        """The level's tensor file contents (masks bit-packed; absent parts left out)."""
        out = {"next_masks": None if self.next_masks is None else [pack_mask(m) for m in self.next_masks],
               "dense": self.dense, "rewind": self.rewind, "trained": self.trained}  # fmt: skip
        return {key: value for key, value in out.items() if value is not None}

    @classmethod
    def from_tensors(cls, records: list[Record], tensors: dict) -> Level:
        """The level whose tensor file holds `tensors` (as `tensors()` wrote them)."""
        masks = tensors.get("next_masks")
        return cls(records, None if masks is None else [unpack_mask(m) for m in masks],
                   tensors.get("dense"), tensors.get("rewind"), tensors.get("trained"))  # fmt: skip


def concatenated(parts: list[list | None]) -> list | None:
    """Per-trial lists of trial groups, one after another; None if any group lacks its list."""
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
    }  # fmt: skip


def trial_dir(directory: Path, trial: int) -> Path:
    """The folder of one trial's files in an experiment's folder."""
    return directory / f"trial_{trial}"


def save_level(directory: Path, level: int, stored: Level) -> None:
    """Store a finished level, one file pair per trial: tensors first, then the JSON that
    vouches for them."""
    for trial in stored.trials:
        folder = trial_dir(directory, trial)
        folder.mkdir(parents=True, exist_ok=True)
        _save_file(folder, level, stored.select([trial]))


def load_level(directory: Path, level: int, trials: Sequence[int] | None = None) -> Level | None:
    """The stored level of `trials` (default: every trial of the experiment), from their own
    files, else from a store written before trials had their own; None if any of them is
    missing, truncated or corrupted."""
    if trials is None:
        try:
            trials = range(json.loads((directory / "experiment.json").read_text())["experiment"]["trials"])
        except (OSError, ValueError, KeyError):
            return None
    parts, shared = [], None
    for trial in trials:
        part = _load_file(trial_dir(directory, trial), level)
        if part is None:
            if shared is None:
                shared = _load_file(directory, level) or Level([])
            part = shared.select([trial])
        if part is None:
            return None
        parts.append(part)
    return Level.join(parts)


def stored_level_numbers(directory: Path) -> list[int]:
    """The levels of which any trial has files in an experiment's folder, in order."""
    paths = list(directory.glob("level_*.json")) + list(directory.glob("trial_*/level_*.json"))
    return sorted({int(p.stem.split("_")[1]) for p in paths})


def _save_file(folder: Path, level: int, stored: Level) -> None:
    buffer = io.BytesIO()
    torch.save(stored.tensors(), buffer)
    blob = buffer.getvalue()
    atomic_write(folder / f"level_{level:03d}.pt", blob)
    payload = {
        "store_version": STORE_VERSION,
        "level": level,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "records": [dataclasses.asdict(r) for r in stored.records],
    }
    atomic_write(folder / f"level_{level:03d}.json", json.dumps(payload).encode())


def _load_file(folder: Path, level: int) -> Level | None:
    try:
        payload = json.loads((folder / f"level_{level:03d}.json").read_text())
        blob = (folder / f"level_{level:03d}.pt").read_bytes()
        if payload["store_version"] != STORE_VERSION or payload["level"] != level:
            return None
        if hashlib.sha256(blob).hexdigest() != payload["tensors_sha256"]:
            return None
        records = [Record(**r) for r in payload["records"]]
        return Level.from_tensors(records, torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


@contextlib.contextmanager
def trial_locks(directory: Path, trials: Sequence[int]) -> Iterator[None]:
    """Hold the lock of each trial in `trials` (in order, so two processes never wait on
    each other): while one process trains a trial, another that wants to train it waits,
    then finds its levels stored. The operating system releases a lock when its process
    ends, however it ends, so a killed job never leaves a trial locked. The locks are
    `flock` locks on files beside the trial's levels: on a cluster the results root must be
    on a filesystem that supports them (NFS does; Lustre when mounted with `flock`). Where
    `fcntl` is missing (Windows) nothing is locked: the store stays valid, but two
    processes may train the same trial twice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    held = []
    try:
        for trial in sorted(trials):
            folder = trial_dir(directory, trial)
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / "lock", "a+")  # noqa: SIM115 (held until the block ends)
            held.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                print(f"waiting for trial {trial} of {directory.name}: {holder} is training it", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.truncate(0)
            handle.write(f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
        yield
    finally:
        for handle in reversed(held):
            handle.close()  # closing releases the lock


def write_description(directory: Path, exp: Experiment, max_members: int) -> None:
    """experiment.json: what this directory holds, readable by a person."""
    description = {"identity": exp.identity(), "experiment": exp.to_dict(), "max_members": max_members}
    atomic_write(directory / "experiment.json", json.dumps(description, indent=2).encode())


def write_tables(directory: Path, records: list[Record]) -> None:
    """records.csv and curves.csv, each loadable with one pandas.read_csv call."""
    atomic_write(directory / "records.csv", records_table(records).to_csv(index=False).encode())
    atomic_write(directory / "curves.csv", curves_table(records).to_csv(index=False).encode())
