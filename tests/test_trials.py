"""Trials apart: groups of trials train alone or together to the same numbers, each trial
has its own files in the store, and two processes on one trial never both train it."""

import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import lth_lib.lottery
import lth_lib.store
from lth_lib import portable
from lth_lib.data import DataNotFoundError
from lth_lib.lottery import NothingStoredError, run, train_trials
from lth_lib.protocol import paper_experiment, scaled_experiment
from lth_lib.results import NotKeptError
from lth_lib.schedule import trial_groups
from lth_lib.store import load_level, sync

TESTS = Path(__file__).resolve().parent
TWO_TRIALS = {"iterations": 30, "eval_every": 10, "eval_examples": 200, "rounds": 2, "trials": 2,
                  "controls": ("reinit", "random_prune")}  # fmt: skip


def test_groups_hold_whole_trials_as_the_stacks_did():
    cpu_lenet = scaled_experiment("lenet300", "cpu", controls=("reinit", "random_prune"))
    assert trial_groups(cpu_lenet, 16) == [[0, 1]]  # 6 networks: one stack, as before groups
    paper = scaled_experiment("conv6", "paper", controls=("reinit", "random_prune"))
    assert trial_groups(paper, 40) == [[0, 1, 2, 3, 4]]  # a GPU stacks a whole paper level
    assert trial_groups(paper, 16) == [[0, 1], [2, 3], [4]]  # 7 networks per trial
    assert trial_groups(paper, 1) == [[t] for t in range(5)]  # Conv on a CPU: one network at a time


def _counting(monkeypatch) -> list[int]:
    calls, real = [], lth_lib.lottery.train

    def counting(network, members, *args, **kwargs):
        calls.append(len(members))
        return real(network, members, *args, **kwargs)

    monkeypatch.setattr(lth_lib.lottery, "train", counting)
    return calls


def test_trials_trained_apart_give_the_whole_runs_numbers_bit_for_bit(synthetic, tmp_path, monkeypatch):
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    assert trial_groups(exp, 3) == [[0], [1]]
    whole = run(exp, synthetic, results_root=tmp_path / "whole", max_members=3, progress=False)
    calls = _counting(monkeypatch)
    for trial in (1, 0):  # as two cluster jobs would, in either order
        train_trials(exp, [trial], results_root=tmp_path / "apart", max_members=3, data=synthetic)
    assert calls == [1, 3, 3] * 2  # per trial: the dense ticket, then each level's 3 networks
    apart = run(exp, synthetic, results_root=tmp_path / "apart", max_members=3, progress=False)
    assert len(calls) == 6  # the run only read them
    assert apart.records == whole.records  # every number, exactly
    assert (whole.directory / "records.csv").read_bytes() == (apart.directory / "records.csv").read_bytes()


def test_part_of_a_group_is_refused_before_any_training(synthetic, tmp_path, monkeypatch):
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    calls = _counting(monkeypatch)
    with pytest.raises(ValueError, match=r"trials \[1\] .* not whole groups .*\(\[\[0, 1\]\]\)"):
        train_trials(exp, [1], results_root=tmp_path, max_members=16, data=synthetic)
    assert calls == [] and not list(tmp_path.iterdir())  # refused before the experiment's folder was made


def test_a_refused_call_leaves_the_results_root_empty(synthetic, tmp_path, monkeypatch):
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    root = tmp_path / "results"
    root.mkdir()
    calls = _counting(monkeypatch)
    gpu_missing = f"cuda:{torch.cuda.device_count()}"  # the first GPU this machine does not have

    def call(trials: list[int], **kwargs) -> Callable[[], None]:
        return lambda: train_trials(exp, trials, **{"data": synthetic, "results_root": root, **kwargs})

    refusals = [
        (call([]), ValueError, r"trials \[\] .* not whole groups"),
        (call([2]), ValueError, r"trials \[2\] .* not whole groups"),
        (call([1]), ValueError, r"trials \[1\] .* not whole groups"),
        (call([0, 1], data=dataclasses.replace(synthetic, name="cifar10")), ValueError,
         "lenet300 trains on mnist, not on the cifar10 data given"),
        (call([0, 1], data=None, data_root=tmp_path / "no-data"), DataNotFoundError, "mnist not found"),
        (call([0, 1], device=gpu_missing), RuntimeError, None),
        (lambda: run(exp, synthetic, results_root=root, training=False, progress=False), NothingStoredError,
         "no level of lenet300 iterative"),
    ]  # fmt: skip
    for refused, error, message in refusals:
        with pytest.raises(error, match=message):
            refused()
        assert not list(root.iterdir()), f"left behind by a refused call raising {error.__name__}"
    assert calls == []
    train_trials(exp, [0, 1], results_root=root, data=synthetic)  # a valid call trains into the same root
    assert calls == [2, 6, 6]
    assert run(exp, synthetic, results_root=root, training=False, progress=False).levels_done == 3


def test_levels_a_call_cannot_resume_from_are_refused_before_anything_is_written(synthetic, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setattr(portable, "SMALL_MASKS", 0)  # masks kept at the last level only, as for Conv
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    trained = run(exp, synthetic, results_root=tmp_path / "trained", progress=False)
    sync(trained.directory, tmp_path / "portable")
    (tmp_path / "portable" / trained.directory.name / "level_002.npz").unlink()  # level 1's masks: not kept
    root = tmp_path / "results"
    root.mkdir()
    calls = _counting(monkeypatch)
    with pytest.raises(NotKeptError, match="ticket masks are not kept"):
        train_trials(exp, [0, 1], data=synthetic, results_root=root, portable=tmp_path / "portable")
    assert calls == [] and not list(root.iterdir())


def test_a_store_written_before_trials_had_their_own_files_reads_as_before(synthetic, tmp_path, monkeypatch):
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    first = run(exp, synthetic, results_root=tmp_path, progress=False)
    directory = first.directory
    for level in range(3):  # the old layout: one file pair per level, every trial in it
        lth_lib.store._save_file(directory, level, load_level(directory, level))
    for trial in (0, 1):
        shutil.rmtree(directory / f"trial_{trial}")
    calls = _counting(monkeypatch)
    again = run(exp, synthetic, results_root=tmp_path, progress=False)
    assert calls == []
    assert again.records == first.records
    assert load_level(directory, 1, trials=[1]).records == [
        r for r in first.records if r.level == 1 and r.trial == 1
    ]


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import lth_lib.lottery
from conftest import synthetic_dataset
from lth_lib import paper_experiment, run
calls, real = [], lth_lib.lottery.train
def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)
lth_lib.lottery.train = counting
exp = paper_experiment("lenet300", **{small!r})
data = synthetic_dataset()
open({ready!r} + str(__import__("os").getpid()), "w").close()
while not __import__("os").path.exists({go!r}):  # start training when the other process does
    __import__("time").sleep(0.01)
records = run(exp, data, results_root={root!r}, progress=False).records
print("trained", len(calls), "levels", len({{r.level for r in records}}))
"""


def test_two_processes_on_the_same_trials_at_once_train_them_once(tmp_path, synthetic):
    exp = paper_experiment("lenet300", **TWO_TRIALS)
    script = CHILD.format(tests=str(TESTS), small=TWO_TRIALS, root=str(tmp_path / "shared"),
                          ready=str(tmp_path / "ready-"), go=str(tmp_path / "go"))  # fmt: skip
    children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    lines = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert lines == [
        "trained 0 levels 3",
        "trained 3 levels 3",
    ]  # one trained every level, the other read them
    assert any("waiting for trial_0 of" in err for _, err in outputs)
    reference = run(exp, synthetic, results_root=tmp_path / "alone", progress=False)
    shared = run(exp, synthetic, results_root=tmp_path / "shared", progress=False, training=False)
    assert shared.records == reference.records
