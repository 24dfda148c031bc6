"""The portable store: what the figures and a resume need, small enough to travel and commit.

Paper-scale training happens in short GPU slots that return at most 8 files of at most
16 MiB each, and what comes back is committed (`figures/data/paper/`). So a finished
level is kept as one compressed NumPy file, written once and never changed:

    <store>/<network>-<strategy>-<identity>/    the same name as in the results store
        experiment.json                          the experiment and its identity
        level_000.npz, level_001.npz, ...         one per finished level
        level_004-trial_0.npz, ...                or one per trial, where a level's trials
                                                  finished in different calls
        checksums.json                            sha256 of every level file

A level file holds the level's records and curves (float32, as training computed them:
nothing is rounded), how long it trained and where, and, of the tensors the results
store keeps, only these:
- the masks that pruning the level gave: at the experiment's last finished level always
  (a resume continues from them), at every level when they are small (LeNet: its
  figures draw them);
- the trained dense weights (level 0) and rewind weights, when they are small (LeNet:
  weight travel and one-shot pruning read them).
Initial weights are never kept: `models.initial_state` re-derives them from the seeds. What a level
file does not keep reads back as `NotKept` (`lth_lib.results`), which says why when used.
The level store (`lth_lib.store`) reads this store before the results store.

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
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from lth_lib.data import COPIES
from lth_lib.models import parameter_shapes
from lth_lib.paths import PROJECT, atomic_write
from lth_lib.protocol import Experiment, architecture
from lth_lib.pruning import pack_mask, unpack_mask
from lth_lib.results import METRICS, Level, NotKept, Record

FORMAT = "lth-portable"
VERSION = 1
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
    return (
        PROJECT / "figures" / "data" / scale
        if scale in COMMITTED_SCALES
        else PROJECT / "out" / "data" / scale
    )


def committed_store(scale: str) -> Path | None:
    """The committed portable store of `scale` (figures/data/paper/ at paper scale), where
    there is one: what the notebooks draw from before the results store."""
    store = portable_store(scale) if scale in COMMITTED_SCALES else None
    return store if store is not None and store.is_dir() else None


class ExportError(ValueError):
    """An export that cannot be imported: truncated, corrupted, foreign or conflicting."""


def level_path(directory: Path, level: int, trial: int | None = None) -> Path:
    """A level's file: every trial's, or (`trial`) one trial's part of the level."""
    return directory / (f"level_{level:03d}.npz" if trial is None else f"level_{level:03d}-trial_{trial}.npz")


def stored_parts(directory: Path) -> dict[int, set[int | None]]:
    """Level -> what a portable experiment folder holds of it, in files that match their
    checksums: None for the whole level's file, else the trials whose parts it holds."""
    sums = _checksums(directory) if directory.is_dir() else {}
    parts: dict[int, set[int | None]] = {}
    for path in directory.glob("level_*.npz"):
        if sums.get(path.name) == _sha256(path.read_bytes()):
            level, _, trial = path.stem.removeprefix("level_").partition("-trial_")
            parts.setdefault(int(level), set()).add(int(trial) if trial else None)
    return parts


def stored_levels(directory: Path, trials: list[int] | None = None) -> list[int]:
    """The levels a portable experiment folder holds for every trial of `trials` (default:
    all of its experiment's; in the level's file, or in each trial's part), in order."""
    parts = stored_parts(directory)
    if not parts:
        return []
    wanted = set(range(experiment_of(directory).trials) if trials is None else trials)
    return sorted(level for level, held in parts.items() if None in held or held >= wanted)


def stored_folders(exp: Experiment, store: Path) -> dict[str, Path]:
    """The folders of `store` that hold `exp`, by the copy of its data set each was trained on."""
    copies = COPIES[architecture(exp.network).dataset]
    folders = {copy: store / dataclasses.replace(exp, data_copy=copy).folder_name for copy in copies}
    return {copy: folder for copy, folder in folders.items() if folder.is_dir()}


def resumable(exp: Experiment) -> bool:
    """Whether a run can resume `exp` from this store alone at any finished level: the
    last level's masks are always kept, but the dense networks (a one-shot sweep prunes
    them) and the weights at the rewind iteration (late rewinding starts from them) only
    when they are small."""
    if exp.pruning.strategy == "iterative" and not exp.pruning.rewind_iteration:
        return True
    return (
        exp.trials * 4 * sum(shape.numel() for shape in parameter_shapes(exp.network).values())
        <= SMALL_WEIGHTS
    )


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


def write_level(directory: Path, level: int, stored: Level, last: bool, part: bool = False) -> Path:
    """Write one level of the results store as a portable level file (`last`: the
    experiment's last finished level, whose masks a resume needs); `part`: one trial's
    part of it (its masks kept where the whole level's would be)."""
    records = [{k: v for k, v in dataclasses.asdict(r).items() if k != "curve"} for r in stored.records]
    iterations = stored.records[0].curve["iteration"]
    if any(r.curve["iteration"] != iterations for r in stored.records):
        raise ValueError(f"level {level}: members evaluated at different iterations")
    arrays = {
        "iteration": np.asarray(iterations, dtype=np.int64),
        **{f"curve.{k}": np.asarray([r.curve[k] for r in stored.records], dtype=np.float32) for k in METRICS},
    }
    shapes: dict[str, list[int]] = {}
    masks = None if stored.next_masks is None else [pack_mask(m) for m in stored.next_masks]
    whole = experiment_of(directory).trials / len(stored.trials)  # the whole level's size over this file's
    if masks and (last or whole * sum(bits.numel() for m in masks for bits, _ in m.values()) <= SMALL_MASKS):
        for layer, (_, shape) in masks[0].items():
            arrays[f"mask.{layer}"] = np.stack([m[layer][0].numpy() for m in masks])
            shapes[layer] = list(shape)
    for name in ("dense", "rewind"):
        states = getattr(stored, name)
        if (
            states
            and whole * sum(t.numel() * t.element_size() for s in states for t in s.values()) <= SMALL_WEIGHTS
        ):
            for key in states[0]:
                arrays[f"{name}.{key}"] = np.stack([s[key].cpu().numpy() for s in states])
    meta = {"format": FORMAT, "version": VERSION, "level": level, "records": records, "mask_shapes": shapes,
            "trained": stored.trained, **({"trial": stored.trials[0]} if part else {})}  # fmt: skip
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    if part and len(stored.trials) != 1:
        raise ValueError(f"a part of level {level} is one trial's, not trials {stored.trials}'")
    path = level_path(directory, level, stored.trials[0] if part else None)
    atomic_write(path, buffer.getvalue())
    return path


NOT_KEPT = {
    "next_masks": NotKept(
        "these ticket masks are not kept: a portable store keeps a level's masks only where they are small "
        f"({SMALL_MASKS:,} bytes packed, every trial) or at an experiment's last finished level; train the "
        "experiment from level 0 in a results store to have them"
    ),
    **{
        name: NotKept(
            f"the {what} are not kept: a portable store keeps them only where they are small ({SMALL_WEIGHTS:,} "
            "bytes, every trial); train the experiment from level 0 in a results store to have them"
        )
        for name, what in (("dense", "trained dense weights"), ("rewind", "weights at the rewind iteration"))
    },
    "tickets": NotKept(
        "the trained tickets are not kept: a portable store keeps no trained weights beyond level 0; the results "
        "store that trained them keeps them for small networks"
    ),
}


def read_level(directory: Path, level: int, trials: list[int] | None = None) -> Level | None:
    """A portable level of `trials` (default: every trial) as a `Level` (what it does not
    keep is `NOT_KEPT`'s), from the level's file or else each trial's part; None if one is
    missing or does not match its checksum."""
    whole = _read_file(directory, level, None)
    if whole is not None:
        return whole if trials is None else whole.select(trials)
    try:
        trials = list(range(experiment_of(directory).trials)) if trials is None else trials
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = [_read_file(directory, level, trial) for trial in trials]
    return None if not parts or None in parts else Level.join(parts)


def _read_file(directory: Path, level: int, trial: int | None) -> Level | None:
    path = level_path(directory, level, trial)
    try:
        blob = path.read_bytes()
        if _checksums(directory).get(path.name) != _sha256(blob):
            return None
        with np.load(io.BytesIO(blob)) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            if (meta["format"], meta["version"], meta["level"], meta.get("trial")) != (
                FORMAT,
                VERSION,
                level,
                trial,
            ):
                return None
            return Level(_records(arrays, meta), _masks(arrays, meta), *(_weights(arrays, name, level) for name in (
                "dense", "rewind")), trained=meta.get("trained") or None,
                tickets=NOT_KEPT["tickets"] if level else None)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _records(arrays, meta: dict) -> list[Record]:
    iterations = arrays["iteration"].tolist()
    curves = {k: arrays[f"curve.{k}"] for k in METRICS}
    return [
        Record(**fields, curve={"iteration": iterations, **{k: curves[k][i].tolist() for k in METRICS}})
        for i, fields in enumerate(meta["records"])
    ]


def _masks(arrays, meta: dict) -> list | NotKept:
    layers = meta["mask_shapes"]
    if not layers:
        return NOT_KEPT["next_masks"]
    trials = len(arrays[f"mask.{next(iter(layers))}"])
    return [
        unpack_mask({layer: (torch.from_numpy(arrays[f"mask.{layer}"][t].copy()), tuple(shape))
                     for layer, shape in layers.items()})
        for t in range(trials)
    ]  # fmt: skip


def _weights(arrays, name: str, level: int) -> list | NotKept | None:
    """Each trial's `name` weights ("dense" or "rewind"), which only level 0 has."""
    keys = [k for k in arrays.files if k.startswith(f"{name}.")]
    if not keys:
        return NOT_KEPT[name] if level == 0 else None
    trials = len(arrays[keys[0]])
    return [
        {k.split(".", 1)[1]: torch.from_numpy(np.array(arrays[k][t])) for k in keys} for t in range(trials)
    ]


def experiment_of(directory: Path) -> Experiment:
    """The experiment a portable (or results-store) folder holds, from its experiment.json."""
    return Experiment.from_dict(json.loads((directory / "experiment.json").read_text())["experiment"])


def add_levels(
    target: Path, levels: list[tuple[int, Level, bool, bool]], experiment_json: bytes
) -> list[Path]:
    """Write `levels` (level, Level, whether it is the last finished level of its trials,
    whose masks a resume needs, whether it is one trial's part) into the portable
    experiment folder `target` (with its experiment.json, if new). The files written."""
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "experiment.json").exists():
        atomic_write(target / "experiment.json", experiment_json)
    written = [write_level(target, level, stored, last, part) for level, stored, last, part in levels]
    _add_checksums(target, written)
    return written


def export(store: Path, files: list[Path], out: Path, note: dict | None = None) -> list[Path]:
    """Pack `files` (level files of `store`, with their experiments' experiment.json) into
    at most MAX_PARTS tar parts under `out`, beside MANIFEST.json; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    members = sorted(
        {f.relative_to(store) for f in files}
        | {f.parent.relative_to(store) / "experiment.json" for f in files}
    )
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
        raise ExportError(
            f"the export needs {len(parts)} parts of {PART_LIMIT:,} bytes; at most {MAX_PARTS} travel"
        )
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
        "parts": [
            {"name": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p.read_bytes())} for p in written
        ],
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
                raise ExportError(
                    f"{path} is missing, truncated or corrupted: its size or sha256 is not the manifest's"
                )
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                for member in tar.getmembers():
                    name = Path(member.name)
                    if (
                        not member.isfile()
                        or name.is_absolute()
                        or ".." in name.parts
                        or len(name.parts) != 2
                    ):
                        raise ExportError(f"{path} holds {member.name!r}, which no export writes")
                    (unpacked / name.parent).mkdir(parents=True, exist_ok=True)
                    (unpacked / name).write_bytes(tar.extractfile(member).read())
        files = {f["path"]: f["sha256"] for f in manifest["files"]}
        found = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
        if found != set(files):
            raise ExportError(
                f"the parts hold other files than the manifest lists: {sorted(found ^ set(files))}"
            )
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
        raise ExportError(
            f"{path} has export version {manifest.get('version')}; this lth_lib reads {VERSION}"
        )
    return manifest


def _check_experiment(folder: Path) -> None:
    """A folder of an export names its experiment's identity, and its files are that experiment's."""
    try:
        experiment = experiment_of(folder)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{folder.name}: no valid experiment.json ({error})") from None
    if folder.name != experiment.folder_name:
        raise ExportError(
            f"{folder.name} does not hold the experiment its name gives (identity {experiment.identity()})"
        )
    for path in folder.glob("level_*.npz"):
        with np.load(path) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
        named = level_path(folder, meta.get("level", -1), meta.get("trial")).name
        if (meta.get("format"), meta.get("version"), named) != (FORMAT, VERSION, path.name):
            raise ExportError(f"{folder.name}/{path.name} is not a level file of this format")


def _checksums(directory: Path) -> dict[str, str]:
    path = directory / "checksums.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _add_checksums(directory: Path, paths: list[Path]) -> None:
    sums = {**_checksums(directory), **{p.name: _sha256(p.read_bytes()) for p in paths}}
    atomic_write(
        directory / "checksums.json", (json.dumps(dict(sorted(sums.items())), indent=1) + "\n").encode()
    )


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
