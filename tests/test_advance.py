"""Paper scale in short slots: advance within a budget, export, import, resume exactly."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lth_lib.advance import advance, levels_stored, queue
from lth_lib.data import pack_data
from lth_lib.lottery import run
from lth_lib.paths import PROJECT
from lth_lib.portable import import_export

BUDGET = 20


def _advance(data: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m lth_lib.advance ARGS` at smoke scale on the CPU, and its wall time."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lth_lib.advance", "--scale", "smoke", "--device", "cpu", *args],
        capture_output=True, text=True, cwd=PROJECT, env={**os.environ, "LTH_DATA": str(data)}, check=False,
    )  # fmt: skip
    return done, time.monotonic() - started


def test_advance_in_slots_ends_with_the_records_of_one_uninterrupted_run(local_data, tmp_path):
    # one slot: stop within the budget, export at most 8 files under 16 MiB
    first, seconds = _advance(local_data, "--budget", str(BUDGET), "--store", str(tmp_path / "gpu-store"),
                              "--results", str(tmp_path / "gpu-results"), "--export", str(tmp_path / "export"))  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert seconds <= BUDGET, f"took {seconds:.1f} s of a {BUDGET} s budget"
    interrupted = "stopped at" in first.stdout  # on 2 cores the smoke scale takes longer than 20 s
    files = list((tmp_path / "export").iterdir())
    assert 2 <= len(files) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in files)
    manifest = json.loads((tmp_path / "export" / "MANIFEST.json").read_text())
    assert {p["name"] for p in manifest["parts"]} | {"MANIFEST.json"} == {f.name for f in files}

    # back here, in a fresh checkout: import, then a second slot finishes the work
    committed = tmp_path / "committed"
    assert import_export(tmp_path / "export", committed)
    done_before = sum(levels_stored(exp, committed) for exp in queue("smoke"))
    every = sum(exp.pruning.rounds + 1 for exp in queue("smoke"))
    assert 0 < done_before < every if interrupted else done_before == every
    advance("smoke", 3600, committed, tmp_path / "second-results", local_data, "cpu")

    # one uninterrupted run on this machine gives the same records
    for exp in queue("smoke"):
        assert levels_stored(exp, committed) == exp.pruning.rounds + 1
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
