"""The results store: every finished level of an experiment on disk, found again by hash.

    <results root>/<network>-<strategy>-<identity>/
        experiment.json          the Experiment's fields, its identity, how it was run
        level_000.pt             tensors a later level needs (masks, rewind/dense weights)
        level_000.json           that level's records and curves, and the .pt's sha256
        records.csv, curves.csv  tidy tables of every level, written when the run ends

Each file is written to a temporary name and renamed, and a level counts as finished only
when its JSON parses and the sha256 it names matches its tensor file. A run killed at any
moment is rerun from the first unfinished job; the jobs (which levels train together) are
fixed by the experiment and `max_members`, so a resumed run computes exactly what an
uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
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
    """One finished level: its records, and what the levels after it start from (None
    where this level does not keep it)."""

    records: list[Record]
    next_masks: list[Mask] | None = None  # each trial's ticket mask for the next level
    dense: list[State] | None = None  # level 0: each trial's trained dense network
    rewind: list[State] | None = None  # level 0, late rewinding: each trial's weights at iteration k
    trained: dict | None = None  # how it was trained: seconds, networks, at once, device, torch

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


def save_level(directory: Path, level: int, stored: Level) -> None:
    """Store a finished level: tensors first, then the JSON that vouches for them."""
    buffer = io.BytesIO()
    torch.save(stored.tensors(), buffer)
    blob = buffer.getvalue()
    atomic_write(directory / f"level_{level:03d}.pt", blob)
    payload = {
        "store_version": STORE_VERSION,
        "level": level,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "records": [dataclasses.asdict(r) for r in stored.records],
    }
    atomic_write(directory / f"level_{level:03d}.json", json.dumps(payload).encode())


def load_level(directory: Path, level: int) -> Level | None:
    """A stored level, or None if it is missing, truncated or corrupted."""
    try:
        payload = json.loads((directory / f"level_{level:03d}.json").read_text())
        blob = (directory / f"level_{level:03d}.pt").read_bytes()
        if payload["store_version"] != STORE_VERSION or payload["level"] != level:
            return None
        if hashlib.sha256(blob).hexdigest() != payload["tensors_sha256"]:
            return None
        records = [Record(**r) for r in payload["records"]]
        return Level.from_tensors(records, torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def write_description(directory: Path, exp: Experiment, max_members: int) -> None:
    """experiment.json: what this directory holds, readable by a person."""
    description = {"identity": exp.identity(), "experiment": exp.to_dict(), "max_members": max_members}
    atomic_write(directory / "experiment.json", json.dumps(description, indent=2).encode())


def write_tables(directory: Path, records: list[Record]) -> None:
    """records.csv and curves.csv, each loadable with one pandas.read_csv call."""
    atomic_write(directory / "records.csv", records_table(records).to_csv(index=False).encode())
    atomic_write(directory / "curves.csv", curves_table(records).to_csv(index=False).encode())
