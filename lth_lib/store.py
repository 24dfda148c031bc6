"""The level store: an experiment's finished levels behind one interface, `LevelStore`
(`get`, `put`, `lock`), over two backends read in one order:

1. the portable store (`lth_lib.portable`): small level files that travel and are
   committed (the paper-scale results, `figures/data/paper/`); read only here;
2. the results store (this module): every level a run trains, with every tensor a later
   level needs; written here.

A level the portable store holds is served from it, with what it does not keep filled in
from the results store's copy of the same level where there is one (`Level.filled_from`);
what neither keeps stays `NotKept`. The results store's levels are read only while they
grew from the levels read before them: not once it disagrees with the portable store on
a level, nor once a level has been trained anew.

The results store on disk:

    <results root>/<network>-<strategy>-<identity>/
        experiment.json          the Experiment's fields, its identity, how it was run
        trial_0/level_000.pt     tensors a later level of trial 0 needs (masks, rewind/dense weights)
        trial_0/level_000.json   that trial's records and curves at that level, and the .pt's sha256
        trial_0/lock             held by the process training trial 0 (`LevelStore.lock`)
        trial_1/...
        records.csv, curves.csv  tidy tables of every trial and level, written when a run ends
                                 (`Results.write_tables`)
        stability/level_001-trial_0.json
                                 two copies' line of a level's ticket (`lth_lib.stability`)
    <results root>/dense/<network>-dense-<identity>/seed_0/level_000.{json,pt}
                                 the dense networks, shared by every experiment that trains
                                 them alike, with their weights at the rewind points (`DenseStore`)

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

from lth_lib.data import DataNotFoundError, Dataset, data_copy
from lth_lib.paths import PROJECT, atomic_write, env_path
from lth_lib.portable import add_levels, read_level, stored_folders, stored_parts
from lth_lib.protocol import Experiment, architecture
from lth_lib.pruning import pack_mask, unpack_mask
from lth_lib.results import Level, Record

RESULTS_ENV = "LTH_RESULTS"
STORE_VERSION = 1
DENSE_FOLDER = "dense"  # the shared dense store's folder in the results root (`DenseStore`)


class LevelStore:
    """The finished levels of some trials of an experiment, read in order with `get` from
    the portable store's folder `committed`, then the results store's folder `directory`
    (either None: none), and written with `put` into `directory` (None: not kept)."""

    def __init__(self, trials: list[int], directory: Path | None, committed: Path | None):
        self.trials, self.directory, self.committed = trials, directory, committed
        self._read_results = directory is not None  # False once its later levels grew from other results
        self._read_any = directory is not None or committed is not None  # False once a level is trained anew

    def get(self, level: int) -> Level | None:
        """The stored `level` of these trials, None if some trial lacks it. Levels are
        asked for in order: 0, 1, 2, ..."""
        if not self._read_any:
            return None
        local = load_level(self.directory, level, self.trials) if self._read_results else None
        ours = read_level(self.committed, level, self.trials) if self.committed is not None else None
        if ours is None:
            return local
        if local is not None and local.records != ours.records:
            self._read_results, local = (
                False,
                None,
            )  # the results store's later levels grew from other results
        return ours.filled_from(local)

    def put(self, level: int, stored: Level) -> None:
        """Keep a newly trained level (in the results store, if any; its snapshots are the
        shared dense store's to keep); the stores' later levels are not read after it, since
        they did not grow from it."""
        self._read_any = False
        if self.directory is not None:
            save_level(self.directory, level, dataclasses.replace(stored, snapshots=None))

    def lock(self) -> contextlib.AbstractContextManager:
        """Hold these trials' locks in the results store while training them (`trial_locks`)."""
        return (
            trial_locks(self.directory, self.trials)
            if self.directory is not None
            else contextlib.nullcontext()
        )


class DenseStore:
    """The trained dense networks (level 0) of some trials, shared by every experiment that
    trains them alike: found by what determines them (network, training, data copy, the
    trial's seed; `dense_folder_name`), not by the experiment that trained them first. So
    one-shot's level 0 is iterative's, and every rewind iteration k reads one dense training:
    each keeps its weights at every rewind point of its training (`protocol.rewind_points`)
    and at the k of the experiment that trained it.

    In the results store: `dense/<network>-dense-<identity>/seed_<seed>/level_000.{json,pt}`,
    written and vouched for as an experiment's levels are, and locked per seed while trained."""

    def __init__(self, directory: Path, trials: list[int], seeds: list[int]):
        self.directory, self.trials, self.seeds = directory, trials, seeds

    def get(self, rewind_iteration: int) -> Level | None:
        """The trials' level 0 (records numbered by these trials), with their weights at
        `rewind_iteration` as rewind weights; None if a seed lacks it, or lacks those weights."""
        parts = []
        for trial, seed in zip(self.trials, self.seeds):
            part = _load_file(self._folder(seed), 0)
            snapshots = part.snapshots[0] if part is not None and part.snapshots else {}
            if part is None or (rewind_iteration and rewind_iteration not in snapshots):
                return None
            records = [dataclasses.replace(r, trial=trial) for r in part.records]
            rewind = [snapshots[rewind_iteration]] if rewind_iteration else None
            trained = {
                **(part.trained or {}),
                "found_in": self.directory.name,
            }  # as the experiment that trained it did
            parts.append(Level(records, None, part.dense, rewind, trained, part.snapshots))
        return Level.join(parts)

    def put(self, stored: Level) -> None:
        """Keep a newly trained level 0 of these trials, with its snapshots, one seed's files each."""
        for trial, seed in zip(self.trials, self.seeds):
            folder = self._folder(seed)
            folder.mkdir(parents=True, exist_ok=True)
            _save_file(folder, 0, dataclasses.replace(stored.select([trial]), next_masks=None, rewind=None))

    def lock(self) -> contextlib.AbstractContextManager:
        """Hold these seeds' locks while finding or training their dense networks (`folder_locks`)."""
        return folder_locks([self._folder(seed) for seed in self.seeds])

    def _folder(self, seed: int) -> Path:
        return self.directory / f"seed_{seed}"


def dense_folder_name(exp: Experiment) -> str:
    """The name of the folder of `exp`'s dense networks in the shared dense store: its
    network, training and data copy, hashed as an experiment's identity is."""
    return f"{exp.network}-dense-{Experiment(exp.network, exp.training, data_copy=exp.data_copy).identity()}"


@dataclass(frozen=True)
class Stores:
    """Where one run finds and keeps an experiment's levels: its folder in the portable
    store (`committed`) and in the results store (`directory`), either None for none."""

    exp: Experiment  # with the data copy it runs on
    directory: Path | None
    committed: Path | None

    def levels(self, trials: list[int]) -> LevelStore:
        """The levels of `trials`, to read in order and add to."""
        return LevelStore(trials, self.directory, self.committed)

    def dense(self, trials: list[int]) -> DenseStore | None:
        """The dense networks of `trials` in the shared dense store (None without a results store)."""
        if self.directory is None:
            return None
        folder = self.directory.parent / DENSE_FOLDER / dense_folder_name(self.exp)
        return DenseStore(folder, trials, [self.exp.seeds[t] for t in trials])

    def make(self, max_members: int) -> None:
        """Make the results folder (if any) and describe the experiment in it (experiment.json,
        with the `max_members` it runs with), or a clear error if it cannot be written."""
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory):
                pass
        except OSError as error:
            raise PermissionError(
                f"cannot write the experiment's folder {self.directory} ({error.strerror}); "
                f"pass results_root= or set {RESULTS_ENV} to a writable folder"
            ) from None
        description = {
            "identity": self.exp.identity(),
            "experiment": self.exp.to_dict(),
            "max_members": max_members,
        }
        atomic_write(self.directory / "experiment.json", json.dumps(description, indent=2).encode())


def open_stores(
    exp: Experiment,
    *,
    data: Dataset | None,
    data_root: str | Path | None,
    root: str | Path | None,
    results_store: bool,
    portable: str | Path | None,
    training: bool,
) -> Stores:
    """The stores of `exp`: the portable store `portable` (None: none) and the results
    store under `root` (`results_root`; `results_store` False: none). Checked before any
    work: the data copy `exp` runs on (`located`). Nothing is written: the results folder
    is made when a level is about to be trained into it (`Stores.make`)."""
    root = results_root(root) if results_store else None
    portable = Path(portable) if portable is not None else None
    exp = located(exp, data, data_root, portable, training)
    directory = root / exp.folder_name if root is not None else None
    return Stores(exp, directory, portable / exp.folder_name if portable is not None else None)


def located(
    exp: Experiment, data: Dataset | None, data_root, portable: Path | None, training: bool
) -> Experiment:
    """`exp` with the data copy it runs on: the data's (refused if it is not the data set
    `exp`'s network trains on); without training, the one `exp` names, else the local
    copy's, else the one the portable store holds `exp` for."""
    if not training and data is None and exp.data_copy:
        return exp
    dataset = architecture(exp.network).dataset
    if data is not None:
        if data.name != dataset:
            raise ValueError(f"{exp.network} trains on {dataset}, not on the {data.name} data given")
        copy = data.copy
    else:
        try:
            copy = data_copy(dataset, data_root)  # fails early if missing
        except DataNotFoundError:
            copies = list(stored_folders(exp, portable)) if portable is not None and not training else []
            if len(copies) != 1:
                raise
            copy = copies[0]
    if exp.data_copy and exp.data_copy != copy:
        raise ValueError(f"experiment asks for data copy {exp.data_copy!r} but the data found is {copy!r}")
    return dataclasses.replace(exp, data_copy=copy)


def results_root(root: str | Path | None = None) -> Path:
    """The `root` argument, else LTH_RESULTS (a relative one from the project root), else
    `results/` in the project (git-ignored), else ~/.cache/lth/results outside a checkout."""
    if root is not None:
        return Path(root)
    from_env = env_path(RESULTS_ENV)
    if from_env is not None:
        return from_env
    return PROJECT / "results" if PROJECT else Path.home() / ".cache" / "lth" / "results"


def experiment_dir(exp: Experiment, root: str | Path | None = None) -> Path:
    """The directory that holds (or will hold) `exp`'s results."""
    return results_root(root) / exp.folder_name


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


def sync(results_dir: Path, portable: Path) -> list[Path]:
    """Write the finished levels that `results_dir` (an experiment's folder in the results
    store; it may hold only the levels trained after those the portable store has) has and
    the portable store `portable` lacks: a level every trial has, of which the portable
    store holds nothing, as one file; else each trial's part it lacks, as the trial's own
    file, so that a level whose trials finish in different calls travels call by call.
    The files written."""
    target = portable / results_dir.name
    experiment_json = (results_dir / "experiment.json").read_bytes()
    trials = range(json.loads(experiment_json)["experiment"]["trials"])
    held = stored_parts(target)
    whole, parts = [], []
    for level in stored_level_numbers(results_dir):
        have = held.get(level, set())
        if None in have:
            continue
        stored = load_level(results_dir, level) if not have else None
        if stored is not None:
            whole.append((level, stored))
            continue
        parts += [
            (level, part) for t in trials if t not in have and (part := load_level(results_dir, level, [t]))
        ]
    if not whole and not parts:
        return []
    last = {t: max((level for level, p in [*whole, *parts] if t in p.trials), default=-1) for t in trials}
    new = [(level, stored, any(last[t] == level for t in stored.trials), False) for level, stored in whole]
    new += [(level, part, level == last[part.trials[0]], True) for level, part in parts]
    return add_levels(target, new, experiment_json)


def _save_file(folder: Path, level: int, stored: Level) -> None:
    tensors = {"next_masks": None if stored.next_masks is None else [pack_mask(m) for m in stored.next_masks],
               "dense": stored.dense, "rewind": stored.rewind, "trained": stored.trained,
               "snapshots": stored.snapshots, "tickets": stored.tickets}  # fmt: skip
    buffer = io.BytesIO()
    torch.save({key: value for key, value in tensors.items() if value is not None}, buffer)
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
        tensors = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
        masks = tensors.get("next_masks")
        return Level(records, None if masks is None else [unpack_mask(m) for m in masks],
                     tensors.get("dense"), tensors.get("rewind"), tensors.get("trained"),
                     tensors.get("snapshots"), tensors.get("tickets"))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def trial_locks(directory: Path, trials: Sequence[int]) -> contextlib.AbstractContextManager:
    """Hold the lock of each trial in `trials` of the experiment folder `directory` (`folder_locks`)."""
    return folder_locks([trial_dir(directory, trial) for trial in sorted(trials)])


@contextlib.contextmanager
def folder_locks(folders: Sequence[Path]) -> Iterator[None]:
    """Hold the lock of each folder in `folders` (in order, so two processes that take them
    in the same order never wait on each other): while one process trains a trial (or a
    seed's dense network), another that wants to train it waits, then finds it stored. The
    operating system releases a lock when its process ends, however it ends, so a killed
    job never leaves a trial locked. The locks are
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
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / "lock", "a+")  # noqa: SIM115 (held until the block ends)
            held.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                print(
                    f"waiting for {folder.name} of {folder.parent.name}: {holder} is training it",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.truncate(0)
            handle.write(
                f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            )
            handle.flush()
        yield
    finally:
        for handle in reversed(held):
            handle.close()  # closing releases the lock
