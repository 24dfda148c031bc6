"""The portable store: lossless levels, resumes from it, exports that refuse to be misused."""

import dataclasses
import hashlib
import json
import shutil
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lth_lib.lottery
from lth_lib import portable
from lth_lib.data import _load_cpu, data_copy, pack_data
from lth_lib.export import export_ticket
from lth_lib.lottery import NothingStoredError, run
from lth_lib.plots import paper_figure, scale_caption
from lth_lib.portable import (
    MAX_PARTS,
    ExportError,
    export,
    import_export,
    read_level,
    stored_levels,
    training_times,
)
from lth_lib.protocol import paper_experiment
from lth_lib.results import NotKeptError
from lth_lib.schedule import OutOfTime, level_size
from lth_lib.store import load_level, sync
from lth_lib.travel import weight_travel

SMALL = {
    "iterations": 20,
    "eval_every": 10,
    "eval_examples": 200,
    "rounds": 2,
    "trials": 2,
    "controls": ("reinit",),
}


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its sha256: to show that a folder did not change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def stored(synthetic, tmp_path_factory):
    """A small LeNet experiment in a results store, and that store synced to a portable one."""
    root = tmp_path_factory.mktemp("stores")
    exp = paper_experiment("lenet300", **SMALL)
    results = run(exp, synthetic, results_root=root / "results", progress=False)
    written = sync(results.directory, root / "portable")
    return exp, results, root, written


def test_a_portable_level_keeps_records_curves_masks_and_small_weights_exactly(stored):
    exp, results, root, written = stored
    assert [p.name for p in written] == ["level_000.npz", "level_001.npz", "level_002.npz"]
    folder = root / "portable" / results.directory.name
    assert stored_levels(folder) == [0, 1, 2]
    for level in range(3):
        ours, theirs = read_level(folder, level), load_level(results.directory, level)
        assert ours.records == theirs.records  # float32 curves: nothing rounded
        assert all(
            torch.equal(a[k], b[k])
            for a, b in zip(ours.next_masks, theirs.next_masks, strict=True)
            for k in a
        )
    dense = read_level(folder, 0).dense
    assert all(torch.equal(dense[t][k], results.dense_weights[t][k]) for t in range(2) for k in dense[t])
    # a resume reads it as the results store: same records and masks, nothing trained
    drawn = dataclasses.replace(exp, data_copy="synthetic")  # drawn without the data set
    again = run(
        drawn, portable=root / "portable", results_root=root / "empty", training=False, progress=False
    )
    assert again.records == results.records and again.levels_done == 3
    assert all(
        torch.equal(a[k], b[k])
        for lv in (1, 2)
        for a, b in zip(again.masks[lv], results.masks[lv])
        for k in a
    )


def test_what_the_portable_store_does_not_keep_comes_from_the_results_store_or_says_why(synthetic, tmp_path,
                                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setattr(
        portable, "SMALL_MASKS", 0
    )  # masks at the last level only, and no weights: as for Conv
    monkeypatch.setattr(portable, "SMALL_WEIGHTS", 0)
    exp = paper_experiment("lenet300", **SMALL)
    results = run(exp, synthetic, results_root=tmp_path / "results", progress=False)
    sync(results.directory, tmp_path / "portable")
    drawn = dataclasses.replace(exp, data_copy="synthetic")
    both = run(
        drawn,
        portable=tmp_path / "portable",
        results_root=tmp_path / "results",
        training=False,
        progress=False,
    )
    assert both.records == results.records
    for level in range(3):  # filled in from the results store's copy of the same levels
        assert all(
            torch.equal(a[k], b[k]) for a, b in zip(both.masks[level], results.masks[level]) for k in a
        )
    assert all(torch.equal(a[k], b[k]) for a, b in zip(both.dense_weights, results.dense_weights) for k in a)
    alone = run(
        drawn, portable=tmp_path / "portable", results_root=tmp_path / "empty", training=False, progress=False
    )
    assert alone.records == results.records
    with pytest.raises(NotKeptError, match="ticket masks are not kept: a portable store keeps"):
        export_ticket(alone, level=1)
    with pytest.raises(NotKeptError, match="trained dense weights are not kept"):
        weight_travel(alone, 2)
    export_ticket(alone, level=0)  # the dense level's masks are every weight: nothing to keep


def test_each_level_records_how_long_it_trained_and_where(synthetic, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 3))  # a fake clock: 3 s pass between two readings
    monkeypatch.setattr(lth_lib.lottery, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    results = run(
        paper_experiment("lenet300", **SMALL), synthetic, results_root=tmp_path / "results", progress=False
    )
    sync(results.directory, tmp_path / "portable")
    times = training_times(tmp_path / "portable" / results.directory.name)
    assert [level for level, _ in times] == [0, 1, 2]
    for level, trained in times:
        assert (
            trained["seconds"] == 3.0
            and trained["levels_in_job"] == 1
            and trained["device"].startswith("CPU")
        )
        assert (
            trained["networks"] == trained["at_once"] == (2 if level == 0 else 4)
        )  # 2 trials, 1 reinit each
        assert trained["torch"] == torch.__version__


def test_drawing_a_partly_filled_store_says_how_far_it_got(stored, tmp_path):
    exp, results, root, _ = stored
    portable = tmp_path / "portable"
    shutil.copytree(root / "portable", portable)
    (portable / results.directory.name / "level_002.npz").unlink()
    drawn = dataclasses.replace(exp, data_copy="synthetic")
    partial = run(drawn, portable=portable, results_root=tmp_path / "results", training=False, progress=False)
    assert partial.levels_done == 2 and {r.level for r in partial.records} == {0, 1}
    assert "1 of 2 rounds" in scale_caption(exp, levels_done=partial.levels_done)
    paper_figure(partial)  # draws what there is
    with pytest.raises(NothingStoredError, match="no level of lenet300 iterative"):
        run(dataclasses.replace(drawn, seed=5), portable=portable, training=False, progress=False)


def test_a_corrupted_level_file_is_not_served(stored, tmp_path):
    exp, results, root, _ = stored
    portable = tmp_path / "portable"
    shutil.copytree(root / "portable", portable)
    path = portable / results.directory.name / "level_001.npz"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert read_level(path.parent, 1) is None and stored_levels(path.parent) == [0, 2]
    drawn = dataclasses.replace(exp, data_copy="synthetic")
    assert run(drawn, portable=portable, training=False, progress=False).levels_done == 1


def test_a_deadline_stops_training_and_keeps_the_finished_levels(synthetic, tmp_path):
    exp = paper_experiment("lenet300", **SMALL)
    with pytest.raises(OutOfTime):
        run(exp, synthetic, results_root=tmp_path, progress=False, deadline=time.monotonic() - 1)
    assert not list(tmp_path.rglob("level_*.json"))
    deadline = time.monotonic() + 3600
    finished = run(exp, synthetic, results_root=tmp_path, progress=False, deadline=deadline)
    assert finished.levels_done == 3


def test_export_and_import_round_trip_and_refuse_what_they_must(stored, tmp_path):
    _, results, root, written = stored
    out = tmp_path / "export"
    files = export(root / "portable", written, out)
    assert len(files) <= MAX_PARTS + 1 and all(f.stat().st_size < 16 * 2**20 for f in files)
    target = tmp_path / "committed"
    added = import_export(out, target)
    assert [p.name for p in added] == ["level_000.npz", "level_001.npz", "level_002.npz"]
    assert _tree(target / results.directory.name) == _tree(root / "portable" / results.directory.name)
    assert import_export(out, target) == []  # importing again adds nothing
    before = _tree(target)

    def refused(export_dir: Path, message: str) -> None:
        with pytest.raises(ExportError, match=message):
            import_export(export_dir, target)
        assert _tree(target) == before

    part = out / "part-000.tar"
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / part.name).write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    refused(broken, "missing, truncated or corrupted")
    flipped = bytearray(part.read_bytes())
    flipped[5000] ^= 1
    (broken / part.name).write_bytes(bytes(flipped))
    refused(broken, "missing, truncated or corrupted")
    (broken / "MANIFEST.json").write_text(json.dumps({"format": "something-else"}))
    refused(broken, "not an lth export")
    refused(tmp_path / "nowhere", "no readable MANIFEST.json")
    # a well-formed export of other results for the same level: refused, not mixed in
    other = tmp_path / "other"
    shutil.copytree(root / "portable", other)
    level = other / results.directory.name / "level_002.npz"
    with np.load(level) as arrays:
        changed = dict(arrays)
    changed["curve.val_loss"] = changed["curve.val_loss"] + 1
    np.savez_compressed(level, **changed)
    refused(_export_of(other, [level], tmp_path / "other-export"), "differs from the one already")
    # an experiment folder whose name does not match its experiment.json
    renamed = tmp_path / "renamed"
    shutil.copytree(root / "portable", renamed)
    folder = renamed / results.directory.name
    folder.rename(folder.with_name(folder.name[:-4] + "0000"))
    moved = folder.with_name(folder.name[:-4] + "0000")
    refused(
        _export_of(renamed, list(moved.glob("*.npz")), tmp_path / "renamed-export"),
        "does not hold the experiment",
    )


def _export_of(store: Path, files: list[Path], out: Path) -> Path:
    export(store, files, out)
    return out


def test_an_export_never_holds_unexpected_paths(stored, tmp_path):
    _, _, root, written = stored
    out = tmp_path / "export"
    export(root / "portable", written, out)
    evil = tmp_path / "evil"
    shutil.copytree(out, evil)
    with tarfile.open(evil / "part-000.tar", "a") as tar:
        tar.add(evil / "MANIFEST.json", arcname="../escape.json")
    manifest = json.loads((evil / "MANIFEST.json").read_text())
    blob = (evil / "part-000.tar").read_bytes()
    manifest["parts"][0].update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    (evil / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="which no export writes"):
        import_export(evil, tmp_path / "committed")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "committed").exists()


def test_a_packed_data_set_loads_as_the_folder_it_was_packed_from(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("bird", "airplane", "cat"):
            folder = tmp_path / "data" / "CIFAR-10-images" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    folder / f"{i:04d}.jpg"
                )
    pack_data("cifar10", tmp_path / "carry" / "cifar10.npz", tmp_path / "data")
    assert data_copy("cifar10", tmp_path / "carry") == data_copy("cifar10", tmp_path / "data")
    packed = _load_cpu("cifar10", str(tmp_path / "carry"), False, "cifar10-jpeg-imagefolder")
    folder = _load_cpu("cifar10", str(tmp_path / "data"), False, "cifar10-jpeg-imagefolder")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(packed, field), getattr(folder, field))
    assert packed.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # airplane, bird, cat


def test_a_level_whose_trials_finish_in_different_calls_travels_trial_by_trial_and_resumes_exactly(
    synthetic, tmp_path, monkeypatch
):
    exp = paper_experiment("lenet300", **{**SMALL, "trials": 3, "control_trials": 1})
    per_trial = level_size(exp, 1, trials=1)  # one trial's networks at a time, as Conv trains on a GPU
    whole = run(exp, synthetic, results_root=tmp_path / "whole", max_members=per_trial, progress=False)
    monkeypatch.setattr(portable, "SMALL_MASKS", 0)  # masks kept only where a resume needs them, as Conv's
    jobs = iter(range(100))

    def fake_deadline(deadline, total, first, name):  # the fifth job would not finish in time
        late = next(jobs) >= 4

        def check(iteration, metrics):
            if late:
                raise OutOfTime(f"{name} would end after the deadline")

        return check

    monkeypatch.setattr("lth_lib.schedule.deadline_watch", fake_deadline)
    with pytest.raises(OutOfTime):  # the groups in turn: level 0 of trials 0-2, level 1 of trial 0, then stop
        run(
            exp,
            synthetic,
            results_root=tmp_path / "first",
            max_members=per_trial,
            progress=False,
            deadline=0.0,
        )
    store = tmp_path / "portable"
    written = sync(tmp_path / "first" / whole.directory.name, store)
    assert sorted(p.name for p in written) == ["level_000.npz", "level_001-trial_0.npz"]
    folder = written[0].parent
    assert stored_levels(folder) == [0] and read_level(folder, 1) is None
    assert read_level(folder, 1, [0]).records == [r for r in whole.records if r.level == 1 and r.trial == 0]

    # another machine goes on from the portable store alone, and its levels travel too
    monkeypatch.undo()
    monkeypatch.setattr(portable, "SMALL_MASKS", 0)
    run(
        exp,
        synthetic,
        portable=store,
        results_root=tmp_path / "second",
        max_members=per_trial,
        progress=False,
    )
    written = sync(tmp_path / "second" / whole.directory.name, store)
    assert sorted(p.name for p in written) == [
        "level_001-trial_1.npz",
        "level_001-trial_2.npz",
        "level_002.npz",
    ]
    assert stored_levels(folder) == [0, 1, 2]
    resumed = run(
        exp, synthetic, portable=store, results_root=tmp_path / "nothing", training=False, progress=False
    )
    assert resumed.records == whole.records  # bit for bit
    assert len(training_times(folder)) == 5  # a record per file: 3 parts, 2 whole levels
