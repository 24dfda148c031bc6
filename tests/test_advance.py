"""Paper scale in short slots: advance within a budget, export, import, resume exactly."""

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from lth_lib.advance import advance, describe, levels_stored, main, queue, work_left
from lth_lib.data import pack_data
from lth_lib.lottery import run
from lth_lib.paths import PROJECT
from lth_lib.portable import import_export

BUDGET = 40  # seconds of `FakeClock`: evaluation points, about


class FakeClock:
    """`time` for lth_lib.advance and lth_lib.schedule: a second passes at each reading of
    `monotonic` (an evaluation point reads it once), so a budget counts readings and stops
    a run at the same point on every machine, however fast it trains."""

    def __init__(self):
        self.now = 1000.0
        self.perf_counter = time.perf_counter

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_advance_in_slots_ends_with_the_records_of_one_uninterrupted_run(
    local_data, tmp_path, monkeypatch, capsys
):
    clock = FakeClock()
    for module in ("lth_lib.advance", "lth_lib.schedule"):
        monkeypatch.setattr(f"{module}.time", clock)
    monkeypatch.setattr("lth_lib.advance._alarm", lambda at: contextlib.nullcontext())  # a real-time backstop
    monkeypatch.setattr("lth_lib.advance._process_age", lambda: 0.0)
    # one slot: stop within the budget, export at most 8 files under 16 MiB
    started = clock.now
    status = main(["--scale", "smoke", "--device", "cpu", "--budget", str(BUDGET), "--data", str(local_data),
                   "--store", str(tmp_path / "gpu-store"), "--results", str(tmp_path / "gpu-results"),
                   "--export", str(tmp_path / "export")])  # fmt: skip
    said = capsys.readouterr().out
    assert status == 0, said[-3000:]
    assert clock.now - started <= BUDGET and "stopped at" in said
    files = list((tmp_path / "export").iterdir())
    assert 2 <= len(files) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in files)
    manifest = json.loads((tmp_path / "export" / "MANIFEST.json").read_text())
    assert {p["name"] for p in manifest["parts"]} | {"MANIFEST.json"} == {f.name for f in files}

    # back here, in a fresh checkout: import, then a second slot finishes the work
    committed = tmp_path / "committed"
    assert import_export(tmp_path / "export", committed)
    before = {exp.identity(): levels_stored(exp, committed) for exp in queue("smoke")}
    spanned = [exp for exp in queue("smoke") if 0 < before[exp.identity()] < exp.pruning.rounds + 1]
    assert spanned and sum(before.values()) < sum(exp.pruning.rounds + 1 for exp in queue("smoke"))
    advance("smoke", 10_000, committed, tmp_path / "second-results", local_data, "cpu")
    assert all(levels_stored(exp, committed) == exp.pruning.rounds + 1 for exp in queue("smoke"))

    # an experiment that the slots split gives the records of one uninterrupted run on this machine
    for exp in spanned:
        resumed = run(exp, data_root=local_data, portable=committed, results_root=tmp_path / "nothing", training=False,
                      progress=False)  # fmt: skip
        whole = run(exp, data_root=local_data, results_root=tmp_path / "whole", device="cpu", progress=False)
        assert resumed.records == whole.records, f"{exp.network} {exp.pruning.strategy}"


def test_device_job_dry_run_on_the_cpu_produces_an_export(local_data, tmp_path):
    pack_data("mnist", tmp_path / "carry" / "mnist.npz", local_data)
    env = {**os.environ, "CARRY": str(tmp_path / "carry"), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(PROJECT / "scripts" / "device-job"), "--device", "cpu", "--scale", "smoke", "--budget", "120",
         "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "device-job: data mnist;" in done.stdout and "every experiment is complete" in done.stdout
    added = import_export(tmp_path / "out", tmp_path / "committed")
    assert sorted({p.parent.name.split("-")[1] for p in added}) == ["iterative", "oneshot"]  # LeNet's two


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, paper scale trains")
def test_paper_scale_without_a_gpu_or_stored_results_says_what_training_would_take(
    tmp_path, monkeypatch, capsys
):
    from lth_lib import regenerate

    monkeypatch.setattr("lth_lib.portable.portable_store", lambda scale: tmp_path / "figures-data" / scale)
    monkeypatch.setattr(regenerate, "regenerate", lambda *args: pytest.fail("a notebook ran"))
    assert regenerate.main(["--scale", "paper", "--out", str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err
    assert "No paper-scale results are stored" in message and "would take at least" in message
    for line in ("lenet300 iterative", "lenet300 oneshot", "conv6 iterative"):
        assert line in message
    assert "python -m lth_lib.advance --scale paper" in message and "--train" in message
    assert not (tmp_path / "out").exists()


def test_without_training_each_notebook_draws_the_networks_the_store_covers(
    local_data, tmp_path, monkeypatch
):
    from lth_lib.regenerate import drawable, notebook_names
    from lth_lib.store import sync

    lenet, conv2, *_ = queue("smoke")
    for exp in (lenet, conv2):
        results = run(exp, data_root=local_data, results_root=tmp_path / "results", progress=False)
        sync(results.directory, tmp_path / "store")
    for pruned in (tmp_path / "store").glob("conv2-*/level_00[1-9].npz"):  # Conv-2's dense level alone
        pruned.unlink()
    monkeypatch.setattr("lth_lib.portable.portable_store", lambda scale: tmp_path / "store")
    # LeNet iterative only: one-shot and Conv notebooks have nothing to draw (Conv-2's dense
    # level shows no pruning), or only LeNet
    assert drawable(notebook_names(), "smoke") == {
        "lenet_mnist": ["lenet300"],
        "controls": ["lenet300"],
        "weight_travel": ["lenet300"],
        "tickets": ["lenet300"],
    }


def test_the_estimate_counts_evaluation_and_what_each_trial_group_has_stored(tmp_path, monkeypatch):
    monkeypatch.setattr("lth_lib.advance.seconds_per_step", lambda network, members, device: 0.001)
    monkeypatch.setattr("lth_lib.advance.seconds_per_evaluation", lambda exp, members, device: 1.0)
    per_iteration = 0.001 + 1.0 / 100  # a step, and an evaluation point every 100 steps
    conv2 = next(
        row for row in work_left("paper", None, "cuda") if describe(row["experiment"]) == "conv2 iterative"
    )
    # on a GPU a Conv trial's level (7 networks) is one stack: 5 trials x 21 levels of 20,000 iterations
    assert conv2["done"] == 0 and conv2["seconds"] == pytest.approx(5 * 21 * 20_000 * per_iteration)
    # level 0 of every trial stored, and level 1 of trial 0 (a level that spans calls)
    monkeypatch.setattr("lth_lib.advance.stored_folders", lambda exp, store: {"copy": tmp_path})
    monkeypatch.setattr("lth_lib.portable.stored_parts", lambda folder: {0: {None}, 1: {0}})
    conv2 = next(
        row
        for row in work_left("paper", tmp_path, "cuda")
        if describe(row["experiment"]) == "conv2 iterative"
    )
    assert conv2["done"] == 1 and conv2["seconds"] == pytest.approx((19 + 4 * 20) * 20_000 * per_iteration)


def test_the_estimate_at_stored_gpu_times_counts_the_networks_left(tmp_path, monkeypatch):
    from lth_lib.advance import stored_gpu_times, work_left_text
    from lth_lib.portable import portable_store

    monkeypatch.setattr("lth_lib.advance.seconds_per_step", lambda network, members, device: 0.001)
    monkeypatch.setattr("lth_lib.advance.seconds_per_evaluation", lambda exp, members, device: 1.0)
    # a store holding the committed Conv-2 dense level alone: 5 networks at once in 438.7 s on an H100
    committed = next(portable_store("paper").glob("conv2-iterative-*"))
    store = tmp_path / "store" / committed.name
    store.mkdir(parents=True)
    for name in ("experiment.json", "level_000.npz"):
        (store / name).write_bytes((committed / name).read_bytes())
    sums = json.loads((committed / "checksums.json").read_text())
    (store / "checksums.json").write_text(json.dumps({"level_000.npz": sums["level_000.npz"]}))
    assert stored_gpu_times("paper", store.parent) == {
        "conv2": (pytest.approx(438.7 / 5), "NVIDIA H100 80GB HBM3, float32, 5 at once")
    }
    rows = {describe(row["experiment"]): row for row in work_left("paper", store.parent, "cpu")}
    # the first pass: 5 dense networks, then 20 levels of 5 tickets and 5 reinitialisations
    assert rows["conv2 iterative +1 reinit"]["gpu_seconds"] == pytest.approx((5 + 20 * 10) * 438.7 / 5)
    # the full experiment has its level 0: 20 levels of 35 networks
    assert rows["conv2 iterative"]["gpu_seconds"] == pytest.approx(20 * 35 * 438.7 / 5)
    assert rows["lenet300 iterative"]["gpu_seconds"] is None  # no LeNet level trained on a GPU here
    text = work_left_text(list(rows.values()), "cpu")
    assert "on a GPU, at stored times" in text and "NVIDIA H100 80GB HBM3, float32, 5 at once" in text


def test_the_paper_queue_draws_figure_5_first_with_one_reinitialisation_per_ticket():
    order = [describe(exp) for exp in queue("paper")]
    assert order[:5] == [
        "conv2 iterative +1 reinit",  # Figure 5's Conv-2: tickets and one reinitialisation each
        "lenet300 iterative tickets only k = 1,000",  # LeNet's late rewinding
        "lenet300 iterative tickets only k = 5,000",
        "conv4 iterative +1 reinit",
        "conv6 iterative +1 reinit",
    ]
    # then the full experiments, with the rest of their controls, and everything else, once each
    assert order[5:9] == ["lenet300 iterative", "conv2 iterative", "conv4 iterative", "conv6 iterative"]
    assert len({exp.identity() for exp in queue("paper")}) == len(order)
    first = queue("paper")[0]
    assert (first.controls, first.control_trials, first.trials) == (("reinit",), 1, 5)
    assert [describe(exp) for exp in queue("smoke")][:2] == [
        "lenet300 iterative",
        "conv2 iterative",
    ]  # as drawn


def test_without_training_a_figure_is_drawn_from_the_first_pass_while_it_holds_more_levels(
    local_data, tmp_path, monkeypatch
):
    from lth_lib.notebook import NotebookParameters, first_pass
    from lth_lib.plots import scale_caption
    from lth_lib.regenerate import drawable
    from lth_lib.store import sync

    params = NotebookParameters("lenet_mnist", "smoke", results_root=str(tmp_path / "empty"), train=False)
    full = params.experiments()["lenet300"]["iterative"]
    part = first_pass(full)
    for exp, keep in (
        (full, 1),
        (part, part.pruning.rounds + 1),
    ):  # the full experiment: its dense level only
        results = run(exp, data_root=local_data, results_root=tmp_path / "results", progress=False)
        sync(results.directory, tmp_path / "store")
        for level in range(keep, exp.pruning.rounds + 1):
            (tmp_path / "store" / results.directory.name / f"level_{level:03d}.npz").unlink()
    for module in ("lth_lib.portable.committed_store", "lth_lib.portable.portable_store"):
        monkeypatch.setattr(module, lambda scale: tmp_path / "store")
    drawn = params.run(full)
    assert (
        dataclasses.replace(drawn.experiment, data_copy="") == part
        and drawn.levels_done == part.pruning.rounds + 1
    )
    assert {r.kind for r in drawn.records} == {"ticket", "reinit"}
    assert "(+1 reinit per ticket)" in scale_caption(drawn.experiment, "smoke")
    assert drawable(["lenet_mnist"], "smoke") == {"lenet_mnist": ["lenet300"]}
    # once the full experiment holds as many levels, it is drawn
    results = run(full, data_root=local_data, results_root=tmp_path / "results", progress=False)
    sync(results.directory, tmp_path / "store")
    assert dataclasses.replace(params.run(full).experiment, data_copy="") == full
