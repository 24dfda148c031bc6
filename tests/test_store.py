"""The results store: identities, atomic levels, resume after SIGKILL, corruption, reuse."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import lth_lib.lottery
from lth_lib.lottery import run
from lth_lib.protocol import Experiment, PruningHparams, TrainingHparams, paper_experiment
from lth_lib.store import DENSE_FOLDER, experiment_dir, load_level

TESTS = Path(__file__).resolve().parent
SMALL = {
    "iterations": 30,
    "eval_every": 10,
    "eval_examples": 200,
    "rounds": 3,
    "trials": 2,
    "controls": ("reinit",),
}

# Changed value for every field of every hyperparameter dataclass.
CHANGES = {
    TrainingHparams: {
        "iterations": 31,
        "lr": 1e-3,
        "batch_size": 50,
        "eval_every": 5,
        "eval_examples": 100,
        "dropout": 0.5,
        "optimizer": "sgd",
        "momentum": 0.9,  # SGD's (with Adam it is refused): `_changed` makes the optimizer SGD
        "weight_decay": 1e-4,  # the same
        "lr_drops": (20,),
        "warmup": 5,
        "augment": True,
    },
    PruningHparams: {
        "strategy": "oneshot",
        "rounds": 4,
        "scope": "global",
        "conv_rate": 0.15,
        "fc_rate": 0.25,
        "output_rate": 0.2,
        "rewind_iteration": 10,
        "unpruned": ("fc3",),
    },
    Experiment: {
        "network": "conv4",
        "trials": 3,
        "seed": 7,
        "controls": ("random_prune",),
        "control_trials": 3,
        "data_copy": "x",
    },
}


def _changed(exp: Experiment, cls: type, name: str, value) -> Experiment:
    if cls is TrainingHparams:
        sgd = {"optimizer": "sgd"} if name in ("momentum", "weight_decay") else {}
        return dataclasses.replace(exp, training=dataclasses.replace(exp.training, **{name: value, **sgd}))
    if cls is PruningHparams:
        return dataclasses.replace(exp, pruning=dataclasses.replace(exp.pruning, **{name: value}))
    return dataclasses.replace(exp, **{name: value})


def test_every_field_of_every_dataclass_changes_the_identity():
    exp = paper_experiment("lenet300", **SMALL)
    base = dataclasses.replace(exp, network="conv2")  # a network with a conv rate to vary
    named = {f.name for cls in CHANGES for f in dataclasses.fields(cls)} - {"training", "pruning"}
    assert named == {name for changes in CHANGES.values() for name in changes}  # no field forgotten
    identities = {base.identity()}
    for cls, changes in CHANGES.items():
        for name, value in changes.items():
            identities.add(_changed(base, cls, name, value).identity())
    assert len(identities) == 1 + sum(len(c) for c in CHANGES.values())


def _child_script(results_root: Path, kill_after_evaluations: int | None) -> str:
    """A script that runs the SMALL experiment, SIGKILLing itself mid-round if asked."""
    kill = ""
    if kill_after_evaluations is not None:
        kill = f"""
import importlib
t = importlib.import_module("lth_lib.train")
_record, calls = t._record, [0]
def record(*args):  # once per evaluation point
    calls[0] += 1
    if calls[0] == {kill_after_evaluations}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _record(*args)
t._record = record
"""
    return f"""
import os, signal, sys
sys.path.insert(0, {str(TESTS)!r})
{kill}
from conftest import synthetic_dataset
from lth_lib import paper_experiment, run
exp = paper_experiment("lenet300", **{SMALL!r})
run(exp, synthetic_dataset(), results_root={str(results_root)!r}, progress=False)
"""


def _run_child(results_root: Path, kill_after_evaluations: int | None = None) -> int:
    script = _child_script(results_root, kill_after_evaluations)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    ).returncode


def _stored(results_root: Path) -> tuple[list[dict], pd.DataFrame]:
    [directory] = [d for d in results_root.iterdir() if d.is_dir() and d.name != DENSE_FOLDER]
    levels = [json.loads(p.read_text())["records"] for p in sorted(directory.glob("trial_*/level_*.json"))]
    return levels, pd.read_csv(directory / "records.csv")


def test_a_run_killed_mid_round_resumes_to_exactly_the_uninterrupted_results(tmp_path):
    assert _run_child(tmp_path / "whole") == 0
    # 4 evaluations per level (iterations 0, 10, 20, 30): the 10th is inside level 2.
    assert _run_child(tmp_path / "killed", kill_after_evaluations=10) == -signal.SIGKILL
    [directory] = [p for p in (tmp_path / "killed").iterdir() if p.name != DENSE_FOLDER]
    finished = sorted(str(p.relative_to(directory)) for p in directory.glob("trial_*/level_*.json"))
    assert finished == [f"trial_{t}/level_00{level}.json" for t in (0, 1) for level in (0, 1)]
    assert not (directory / "records.csv").exists()
    assert _run_child(tmp_path / "killed") == 0
    whole, killed = _stored(tmp_path / "whole"), _stored(tmp_path / "killed")
    assert whole[0] == killed[0]  # every record and curve, exactly
    pd.testing.assert_frame_equal(whole[1], killed[1])
    for level in range(4):
        assert load_level(directory, level).next_masks


@pytest.fixture
def finished(tmp_path, synthetic):
    """A finished SMALL experiment in a fresh results root: (experiment, results)."""
    exp = paper_experiment("lenet300", **SMALL)
    return exp, run(exp, synthetic, results_root=tmp_path, progress=False)


def _count_training(monkeypatch) -> list[int]:
    calls = []
    real = lth_lib.lottery.train

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lth_lib.lottery, "train", counting)
    return calls


def test_a_finished_experiment_reruns_without_training(finished, tmp_path, synthetic, monkeypatch):
    exp, first = finished
    calls = _count_training(monkeypatch)
    started = time.perf_counter()
    again = run(exp, synthetic, results_root=tmp_path, progress=False)
    elapsed = time.perf_counter() - started
    assert calls == []
    assert again.records == first.records
    assert elapsed < 1.0, f"reusing a finished experiment took {elapsed:.2f} s"


@pytest.mark.parametrize("damage", ["truncate_tensors", "garble_json", "delete_json"])
def test_a_corrupted_level_is_redone_with_what_follows_it(finished, tmp_path, synthetic, monkeypatch, damage):
    exp, first = finished
    directory = first.directory
    tensors, record = directory / "trial_1" / "level_002.pt", directory / "trial_1" / "level_002.json"
    if damage == "truncate_tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "garble_json":
        record.write_text(record.read_text()[:-20])
    else:
        record.unlink()
    assert load_level(directory, 2) is None
    assert load_level(directory, 2, trials=[0]) is not None  # the other trial's files are intact
    calls = _count_training(monkeypatch)
    again = run(exp, synthetic, results_root=tmp_path, progress=False)
    assert len(calls) == 2  # levels 2 and 3 of the one group of both trials (3 depends on 2); 0 and 1 reused
    assert again.records == first.records
    assert load_level(directory, 2) is not None


def test_the_store_layout_is_tidy_and_self_describing(finished, tmp_path):
    exp, results = finished
    directory = results.directory
    stored = results.experiment  # the experiment with the data copy it ran on filled in
    assert stored == dataclasses.replace(exp, data_copy="synthetic")
    assert directory == experiment_dir(stored, tmp_path)
    assert directory.name == f"lenet300-iterative-{stored.identity()}"
    description = json.loads((directory / "experiment.json").read_text())
    assert description["identity"] == stored.identity()
    assert description["experiment"]["training"]["iterations"] == 30
    records = pd.read_csv(directory / "records.csv")
    assert len(records) == 2 + 3 * 4  # dense tickets, then per level 2 tickets + 2 reinits
    assert set(records.kind) == {"ticket", "reinit"}
    curves = pd.read_csv(directory / "curves.csv")
    assert len(curves) == len(records) * 4
    assert {p.name for p in directory.iterdir() if p.is_dir()} == {"trial_0", "trial_1"}
    assert sorted(p.name for p in (directory / "trial_1").iterdir()) == sorted(
        [f"level_00{level}.{ext}" for level in range(4) for ext in ("json", "pt")] + ["lock"]
    )
    assert not [p for p in directory.rglob(".*")]  # no temporary leftovers


def test_an_unwritable_results_root_fails_before_training(tmp_path, synthetic, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    calls = _count_training(monkeypatch)
    with pytest.raises(PermissionError, match="cannot write the experiment's folder .* LTH_RESULTS"):
        run(
            paper_experiment("lenet300", **SMALL), synthetic, results_root=blocker / "results", progress=False
        )
    assert calls == []


def test_a_data_copy_other_than_the_one_asked_for_is_refused(tmp_path, synthetic):
    exp = paper_experiment("lenet300", data_copy="mnist-torchvision", **SMALL)
    with pytest.raises(
        ValueError, match="asks for data copy 'mnist-torchvision' but the data found is 'synthetic'"
    ):
        run(exp, synthetic, results_root=tmp_path, progress=False)


def test_the_results_root_comes_from_the_environment(tmp_path, synthetic, monkeypatch):
    monkeypatch.setenv("LTH_RESULTS", str(tmp_path / "from-env"))
    exp = paper_experiment("lenet300", **{**SMALL, "rounds": 1, "controls": ()})
    results = run(exp, synthetic, progress=False)
    assert results.directory.parent == tmp_path / "from-env"
    assert os.path.exists(results.directory / "records.csv")


def test_experiments_that_share_a_dense_level_train_it_once(tmp_path, synthetic, monkeypatch):
    dense_stacks = []  # the snapshot iterations of each stack that trains a dense level
    real_train = lth_lib.lottery.train
    monkeypatch.setattr(lth_lib.lottery, "train", lambda *a, **k: (dense_stacks.append(a[5]) if a[5] else None)
                        or real_train(*a, **k))  # fmt: skip
    base = {"iterations": 30, "eval_every": 10, "eval_examples": 200, "rounds": 2, "trials": 2}
    iterative = run(
        paper_experiment("lenet300", controls=("reinit",), **base),
        synthetic,
        results_root=tmp_path,
        progress=False,
    )
    assert dense_stacks == [(1, 3)]  # one stack, keeping the weights at the rewind points (2% and 10% of 30)
    # one-shot, and tickets rewound to a rewind point, find it
    oneshot = run(
        paper_experiment("lenet300", strategy="oneshot", **base),
        synthetic,
        results_root=tmp_path,
        progress=False,
    )
    rewound = run(
        paper_experiment("lenet300", rewind_iteration=3, **base),
        synthetic,
        results_root=tmp_path,
        progress=False,
    )
    assert dense_stacks == [(1, 3)]
    dense = [r for r in iterative.records if r.level == 0]
    assert (
        [r for r in oneshot.records if r.level == 0] == dense == [r for r in rewound.records if r.level == 0]
    )
    for other in (oneshot, rewound):
        assert all(
            torch.equal(a[name], b[name])
            for a, b in zip(iterative.dense_weights, other.dense_weights)
            for name in a
        )
    # the rewind weights are the dense training's at k = 3: what training to 3 gives
    short = run(
        paper_experiment("lenet300", **{**base, "iterations": 3, "eval_every": 3, "rounds": 1}),
        synthetic,
        results_store=False,
        progress=False,
    )
    assert all(
        torch.equal(a[name], b[name])
        for a, b in zip(rewound.rewind_weights, short.dense_weights)
        for name in a
    )
    dense_stacks.remove((1,))  # the short run's
    # the one-shot folder holds its own level 0 (what export and sync read), found in the shared store
    level0 = load_level(experiment_dir(oneshot.experiment, tmp_path), 0)
    assert level0.records == [r for r in oneshot.records if r.level == 0]
    assert level0.trained["found_in"].startswith("lenet300-dense-")
    # a k that is no rewind point of the stored dense training trains it again, keeping that k too
    run(
        paper_experiment("lenet300", rewind_iteration=5, **base),
        synthetic,
        results_root=tmp_path,
        progress=False,
    )
    assert dense_stacks == [(1, 3), (1, 3, 5)]
    # other training hyperparameters train another dense network
    run(
        paper_experiment("lenet300", **{**base, "lr": 1e-3}), synthetic, results_root=tmp_path, progress=False
    )
    assert dense_stacks == [(1, 3), (1, 3, 5), (1, 3)]
