"""The portable store: what the figures and a resume need, small enough to travel and commit.

Paper-scale training happens in short GPU slots that return at most 8 files of at most
16 MiB each, and what comes back is committed (`figures/data/paper/`). So a finished
level is kept as one compressed NumPy file, written once and never changed:

    <store>/<network>-<strategy>-<identity>/    the same name as in the results store
        experiment.json                          the experiment and its identity
        level_000.npz, level_001.npz, ...         one per finished level
        checksums.json                            sha256 of every level file

A level file holds the level's records and curves (float32, as training computed them:
nothing is rounded), how long it trained and where, and, of the tensors the results
store keeps, only these:
- the masks that pruning the level gave: at the experiment's last finished level always
  (a resume continues from them), at every level when they are small (LeNet: its
  figures draw them);
- the trained dense weights (level 0) and rewind weights, when they are small (LeNet:
  weight travel and one-shot pruning read them).
Initial weights are never kept: `glorot_init` re-derives them from the seeds.

An export (`export`) packs new level files into at most 7 tar parts beside a manifest of
sha256 checksums; an import (`import_export`) checks every part and file, refuses a
truncated, corrupted or foreign export, or one that would change a level already there,
and only then adds the files.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from lth_lib.data import COPIES
from lth_lib.paths import PROJECT
from lth_lib.protocol import Experiment, PruningHparams, TrainingHparams, architecture
from lth_lib.pruning import pack_mask, unpack_mask
from lth_lib.results import Record
from lth_lib.store import Level, atomic_write, experiment_dir, load_level, stored_level_numbers

FORMAT = "lth-portable"
VERSION = 1
CURVE_KEYS = ("val_loss", "val_acc", "test_loss", "test_acc")
SMALL_MASKS = 1 << 20  # keep a level's masks (all trials) when they pack into at most this
SMALL_WEIGHTS = 8 << 20  # keep trained dense / rewind weights (all trials) of at most this
PART_LIMIT = 16 * 1000 * 1000  # bytes per exported part (the device returns files under 16 MiB)
MAX_PARTS = 7  # with the manifest, 8 files: what one device call returns


COMMITTED_SCALES = ("paper",)  # scales whose portable store is committed


def portable_store(scale: str) -> Path | None:
    """Where the project keeps `scale`'s portable store: figures/data/paper/ (committed) for
    the paper scale, out/data/<scale>/ (git-ignored) for the others; None outside a checkout."""
    if PROJECT is None:
        return None
    return PROJECT / "figures" / "data" / scale if scale in COMMITTED_SCALES else PROJECT / "out" / "data" / scale


class ExportError(ValueError):
    """An export that cannot be imported: truncated, corrupted, foreign or conflicting."""


def level_path(directory: Path, level: int) -> Path:
    return directory / f"level_{level:03d}.npz"


def stored_levels(directory: Path) -> list[int]:
    """The finished levels of a portable experiment folder (files that match their
    checksums), in order."""
    sums = _checksums(directory) if directory.is_dir() else {}
    return sorted(
        int(p.stem.split("_")[1]) for p in directory.glob("level_*.npz") if sums.get(p.name) == _sha256(p.read_bytes())
    )


def stored_folders(exp: Experiment, store: Path) -> dict[str, Path]:
    """The folders of `store` that hold `exp`, by the copy of its data set each was trained on."""
    copies = COPIES[architecture(exp.network).dataset]
    folders = {copy: experiment_dir(dataclasses.replace(exp, data_copy=copy), store) for copy in copies}
    return {copy: folder for copy, folder in folders.items() if folder.is_dir()}


def training_times(directory: Path) -> list[tuple[int, dict]]:
    """(level, how it was trained) for each level file of a portable experiment folder that
    records it: seconds, networks, how many at once, device and torch version."""
    out = []
    for path in sorted(directory.glob("level_*.npz")):
        with np.load(path) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
        if meta.get("trained"):
            out.append((meta["level"], meta["trained"]))
    return out


def write_level(directory: Path, level: int, stored: Level, last: bool) -> Path:
    """Write one level of the results store as a portable level file (`last`: the
    experiment's last finished level, whose masks a resume needs)."""
    records = [{k: v for k, v in dataclasses.asdict(r).items() if k != "curve"} for r in stored.records]
    iterations = stored.records[0].curve["iteration"]
    if any(r.curve["iteration"] != iterations for r in stored.records):
        raise ValueError(f"level {level}: members evaluated at different iterations")
    arrays = {
        "iteration": np.asarray(iterations, dtype=np.int64),
        **{f"curve.{k}": np.asarray([r.curve[k] for r in stored.records], dtype=np.float32) for k in CURVE_KEYS},
    }
    shapes: dict[str, list[int]] = {}
    masks = None if stored.next_masks is None else [pack_mask(m) for m in stored.next_masks]
    if masks and (last or sum(bits.numel() for m in masks for bits, _ in m.values()) <= SMALL_MASKS):
        for layer, (_, shape) in masks[0].items():
            arrays[f"mask.{layer}"] = np.stack([m[layer][0].numpy() for m in masks])
            shapes[layer] = list(shape)
    for name in ("dense", "rewind"):
        states = getattr(stored, name)
        if states and sum(t.numel() * t.element_size() for s in states for t in s.values()) <= SMALL_WEIGHTS:
            for key in states[0]:
                arrays[f"{name}.{key}"] = np.stack([s[key].cpu().numpy() for s in states])
    meta = {"format": FORMAT, "version": VERSION, "level": level, "records": records, "mask_shapes": shapes,
            "trained": stored.trained}  # fmt: skip
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = level_path(directory, level)
    atomic_write(path, buffer.getvalue())
    return path


def read_level(directory: Path, level: int) -> Level | None:
    """A portable level as the results store's `Level` (tensors it does not keep are
    absent), or None if it is missing or does not match its checksum."""
    path = level_path(directory, level)
    try:
        blob = path.read_bytes()
        if _checksums(directory).get(path.name) != _sha256(blob):
            return None
        with np.load(io.BytesIO(blob)) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            if (meta["format"], meta["version"], meta["level"]) != (FORMAT, VERSION, level):
                return None
            iterations = arrays["iteration"].tolist()
            curves = {k: arrays[f"curve.{k}"] for k in CURVE_KEYS}
            records = [
                Record(**fields, curve={"iteration": iterations, **{k: curves[k][i].tolist() for k in CURVE_KEYS}})
                for i, fields in enumerate(meta["records"])
            ]
            stored = Level(records, trained=meta.get("trained") or None)
            if meta["mask_shapes"]:
                layers = meta["mask_shapes"]
                trials = len(arrays[f"mask.{next(iter(layers))}"])
                stored.next_masks = [
                    unpack_mask({layer: (torch.from_numpy(arrays[f"mask.{layer}"][t].copy()), tuple(shape))
                                 for layer, shape in layers.items()})
                    for t in range(trials)
                ]  # fmt: skip
            for name in ("dense", "rewind"):
                keys = [k for k in arrays.files if k.startswith(f"{name}.")]
                if keys:
                    trials = len(arrays[keys[0]])
                    setattr(stored, name, [
                        {k.split(".", 1)[1]: torch.from_numpy(arrays[k][t].copy()) for k in keys} for t in range(trials)
                    ])  # fmt: skip
        return stored
    except (OSError, ValueError, KeyError, TypeError):
        return None


def experiment_of(directory: Path) -> Experiment:
    """The experiment a portable (or results-store) folder holds, from its experiment.json."""
    fields = json.loads((directory / "experiment.json").read_text())["experiment"]
    training, pruning = TrainingHparams(**fields.pop("training")), PruningHparams(**fields.pop("pruning"))
    return Experiment(training=training, pruning=pruning, **{**fields, "controls": tuple(fields["controls"])})


def sync(results_dir: Path, store: Path) -> list[Path]:
    """Write the finished levels that `results_dir` (an experiment's folder in the results
    store; it may hold only the levels trained after those `store` has) has for every
    trial and the portable store `store` lacks; the files written."""
    target = store / results_dir.name
    have = set(stored_levels(target))
    numbers = stored_level_numbers(results_dir)
    levels = [(level, stored) for level in numbers if (stored := load_level(results_dir, level)) is not None]
    new = [(level, stored) for level, stored in levels if level not in have]
    if not new:
        return []
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "experiment.json").exists():
        shutil.copyfile(results_dir / "experiment.json", target / "experiment.json")
    written = [write_level(target, level, stored, last=level == levels[-1][0]) for level, stored in new]
    _add_checksums(target, written)
    return written


def export(store: Path, files: list[Path], out: Path, note: dict | None = None) -> list[Path]:
    """Pack `files` (level files of `store`, with their experiments' experiment.json) into
    at most MAX_PARTS tar parts under `out`, beside MANIFEST.json; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    members = sorted({f.relative_to(store) for f in files} | {f.parent.relative_to(store) / "experiment.json" for f in files})
    parts: list[list[Path]] = []
    size = 0
    for member in members:
        grown = (store / member).stat().st_size + 1536  # a tar header and padding
        if not parts or size + grown > PART_LIMIT - 10240:
            parts.append([])
            size = 0
        parts[-1].append(member)
        size += grown
    if len(parts) > MAX_PARTS:
        raise ExportError(f"the export needs {len(parts)} parts of {PART_LIMIT:,} bytes; at most {MAX_PARTS} travel")
    written = []
    for index, part in enumerate(parts):
        path = out / f"part-{index:03d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member in part:
                tar.add(store / member, arcname=str(member), recursive=False)
        written.append(path)
    manifest = {
        "format": f"{FORMAT}-export",
        "version": VERSION,
        "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(note or {}),
        "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p.read_bytes())} for p in written],
        "files": [{"path": str(m), "sha256": _sha256((store / m).read_bytes())} for m in members],
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return [*written, out / "MANIFEST.json"]


def import_export(export_dir: Path, store: Path) -> list[Path]:
    """Merge an export into the portable store `store`; the level files added. Every
    check runs before anything is written: a refused export leaves `store` as it was."""
    manifest = _read_manifest(export_dir)
    with tempfile.TemporaryDirectory() as scratch:
        unpacked = Path(scratch)
        for part in manifest["parts"]:
            path = export_dir / part["name"]
            blob = path.read_bytes() if path.is_file() else b""
            if len(blob) != part["bytes"] or _sha256(blob) != part["sha256"]:
                raise ExportError(f"{path} is missing, truncated or corrupted: its size or sha256 is not the manifest's")
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                for member in tar.getmembers():
                    name = Path(member.name)
                    if not member.isfile() or name.is_absolute() or ".." in name.parts or len(name.parts) != 2:
                        raise ExportError(f"{path} holds {member.name!r}, which no export writes")
                    (unpacked / name.parent).mkdir(parents=True, exist_ok=True)
                    (unpacked / name).write_bytes(tar.extractfile(member).read())
        files = {f["path"]: f["sha256"] for f in manifest["files"]}
        found = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
        if found != set(files):
            raise ExportError(f"the parts hold other files than the manifest lists: {sorted(found ^ set(files))}")
        for name, digest in files.items():
            if _sha256((unpacked / name).read_bytes()) != digest:
                raise ExportError(f"{name} in the export does not match its sha256")
        for folder in {Path(name).parent for name in files}:
            _check_experiment(unpacked / folder)
        for name in sorted(files):
            ours = store / name
            if ours.exists() and ours.read_bytes() != (unpacked / name).read_bytes():
                raise ExportError(
                    f"{name} differs from the one already in {store}: the export was made from other "
                    f"results for the same experiment (delete one of the two to choose)"
                )
        added = [name for name in sorted(files) if name.endswith(".npz") and not (store / name).exists()]
        for name in sorted(files):  # all checked: copy in, level files before their checksums
            ours = store / name
            if not ours.exists():
                ours.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(ours, (unpacked / name).read_bytes())
        levels = [name for name in sorted(files) if name.endswith(".npz")]
        for folder in sorted({Path(name).parent for name in levels}):
            _add_checksums(store / folder, [store / n for n in levels if Path(n).parent == folder])
    return [store / name for name in added]


def _read_manifest(export_dir: Path) -> dict:
    path = export_dir / "MANIFEST.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ExportError(f"{export_dir} is not an lth export: no readable MANIFEST.json") from None
    if not isinstance(manifest, dict) or manifest.get("format") != f"{FORMAT}-export":
        raise ExportError(f"{path} is not an lth export manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise ExportError(f"{path} has export version {manifest.get('version')}; this lth_lib reads {VERSION}")
    return manifest


def _check_experiment(folder: Path) -> None:
    """A folder of an export names its experiment's identity, and its files are that experiment's."""
    try:
        experiment = experiment_of(folder)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{folder.name}: no valid experiment.json ({error})") from None
    if folder.name != f"{experiment.network}-{experiment.pruning.strategy}-{experiment.identity()}":
        raise ExportError(f"{folder.name} does not hold the experiment its name gives (identity {experiment.identity()})")
    for path in folder.glob("level_*.npz"):
        with np.load(path) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
        if (meta.get("format"), meta.get("version"), f"level_{meta.get('level'):03d}.npz") != (FORMAT, VERSION, path.name):
            raise ExportError(f"{folder.name}/{path.name} is not a level file of this format")


def _checksums(directory: Path) -> dict[str, str]:
    path = directory / "checksums.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _add_checksums(directory: Path, paths: list[Path]) -> None:
    sums = {**_checksums(directory), **{p.name: _sha256(p.read_bytes()) for p in paths}}
    atomic_write(directory / "checksums.json", (json.dumps(dict(sorted(sums.items())), indent=1) + "\n").encode())


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
