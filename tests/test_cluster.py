"""Trials as jobs through submitit's local executor: the serial run's numbers, a requeued
job resuming from the store, failures reported with their logs, SLURM's options."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from lth_lib.cluster import Options, Unit, collect, deal, local_gpus, slurm_parameters, submit, units, wait
from lth_lib.lottery import run
from lth_lib.protocol import paper_experiment, scaled_experiment

submitit = pytest.importorskip("submitit")
TINY = {
    "iterations": 60,
    "eval_every": 20,
    "eval_examples": 300,
    "rounds": 2,
    "trials": 2,
    "controls": ("reinit", "random_prune"),
}


def _local(tmp_path, jobs: int = 2) -> Options:
    return Options("local", jobs=jobs, folder=tmp_path / "jobs", time_min=10)


def test_two_local_jobs_give_the_serial_runs_records(local_data, tmp_path):
    exp = paper_experiment("lenet300", **TINY)
    work = [Unit(exp, (0,), 3), Unit(exp, (1,), 3)]  # 3 networks at once: one group per trial
    jobs = submit(work, _local(tmp_path), str(local_data), str(tmp_path / "apart"))
    assert len(jobs) == 2 and len({job.job_id for job in jobs}) == 2
    assert wait(jobs) == []
    serial = run(exp, data_root=local_data, results_root=tmp_path / "serial", max_members=3, progress=False)
    apart = run(
        exp,
        data_root=local_data,
        results_root=tmp_path / "apart",
        max_members=3,
        progress=False,
        training=False,
    )
    assert apart.records == serial.records  # every number, bit for bit
    recorded = json.loads((tmp_path / "jobs" / "jobs.json").read_text())
    assert [j["units"] for j in recorded["jobs"]] == [[str(u)] for u in work]


def test_a_job_interrupted_mid_level_is_requeued_and_resumes_to_the_same_numbers(local_data, tmp_path):
    exp = paper_experiment("lenet300", **{**TINY, "iterations": 400, "rounds": 4, "trials": 1})
    directory = None
    [job] = submit([Unit(exp, (0,), 16)], _local(tmp_path, jobs=1), str(local_data), str(tmp_path / "store"))
    deadline = time.monotonic() + 300
    while directory is None or not (directory / "trial_0" / "level_001.json").exists():
        assert time.monotonic() < deadline and job.state == "RUNNING", job.stderr()
        found = list((tmp_path / "store").glob("lenet300-*"))
        directory = found[0] if found else None
        time.sleep(0.05)
    first = {p.name: p.stat().st_mtime_ns for p in (directory / "trial_0").glob("level_*.json")}
    # the signal SLURM (or the local controller) sends before a time limit or a pre-emption:
    # submitit checkpoints the job and requeues it
    os.kill(_task_of(tmp_path / "jobs"), signal.SIGUSR2)
    assert wait([job]) == []
    log = job.stdout() + job.stderr()
    assert "Requeued" in log or "requeued" in log, log[-3000:]
    assert log.count("training lenet300") == 2  # the job started again ...
    after = {p.name: p.stat().st_mtime_ns for p in (directory / "trial_0").glob("level_*.json")}
    assert {name: after[name] for name in first} == first  # ... and kept every level finished before
    assert len(after) == 5
    serial = run(exp, data_root=local_data, results_root=tmp_path / "serial", progress=False)
    resumed = run(exp, data_root=local_data, results_root=tmp_path / "store", progress=False, training=False)
    assert resumed.records == serial.records


def _task_of(folder: Path) -> int:
    """The process that runs a local job's function, its jobs folder being `folder` (Linux)."""
    if not Path("/proc").is_dir():
        pytest.skip("finding a local job's process needs /proc")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in words and str(folder).encode() in words:
            return int(cmdline.parent.name)
    raise AssertionError(f"no process runs a job of {folder}")


def test_a_failed_job_is_reported_with_its_log(tmp_path):
    exp = paper_experiment("lenet300", **TINY)
    jobs = submit(
        [Unit(exp, (0, 1), 16)], _local(tmp_path, jobs=1), str(tmp_path / "no-data"), str(tmp_path / "s")
    )
    [failure] = wait(jobs)
    assert f"job {jobs[0].job_id} failed" in failure
    assert str(jobs[0].paths.stderr) in failure and jobs[0].paths.stderr.exists()
    assert "MNIST" in failure or "mnist" in failure


def test_units_cover_every_trial_once_and_jobs_share_the_work_evenly():
    controls = ("reinit", "random_prune")
    experiments = [
        scaled_experiment(n, "paper", controls=controls) for n in ("lenet300", "conv2", "conv4", "conv6")
    ]
    on_gpu, on_cpu = units(experiments + experiments[:1], "cuda"), units(experiments, "cpu")
    # the repeated experiment is left out; on a GPU a Conv trial's level is a job's stack (`default_max_members`)
    assert [u.trials for u in on_gpu] == [(0, 1, 2, 3, 4)] + [(t,) for t in range(5)] * 3
    assert [u.trials for u in on_cpu] == [(0, 1), (2, 3), (4,)] + [(t,) for t in range(5)] * 3
    dealt = deal(on_cpu, 4)
    assert sorted(str(u) for job in dealt for u in job) == sorted(str(u) for u in on_cpu)
    loads = [sum(u.cost for u in job) for job in dealt]
    assert max(loads) - min(loads) <= max(u.cost for u in on_cpu)  # no job waits on more than one unit's work
    assert len(deal(on_gpu, 20)) == 16  # never an empty job


def test_slurm_options_become_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    options = Options("slurm", jobs=4, partition="gpu", gpus_per_job=1, cpus_per_job=8, time_min=240)
    script = _make_sbatch_string(command="python -m x", folder=tmp_path, **slurm_parameters(options))
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=240",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=lth"):  # fmt: skip
        assert line in script
    assert options.device == "cuda" and options.threads == 8


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"executor": "pbs"}, "unknown executor 'pbs'"),
        ({"jobs": 0}, "jobs must be at least 1"),
        ({"executor": "local", "partition": "gpu"}, "a partition is a SLURM option"),
    ],
)
def test_bad_options_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        Options(**given)


def test_only_slurm_jobs_are_collected_later(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "jobs.json").write_text(json.dumps({"executor": "local", "jobs": []}))
    with pytest.raises(ValueError, match="only SLURM jobs outlive"):
        collect(tmp_path / "jobs")


def test_split_trials_spread_one_experiments_trials_over_units():
    exp = scaled_experiment("lenet300", "paper", controls=("reinit", "random_prune"))
    assert [u.trials for u in units([exp], "cuda")] == [(0, 1, 2, 3, 4)]  # a whole paper level in one stack
    split = units([exp], "cuda", split_trials=True)
    assert [u.trials for u in split] == [(t,) for t in range(5)]
    assert {u.max_members for u in split} == {7}  # one ticket and its 6 controls at a time
    assert [u.trials for u in units([exp], "cpu", split_trials=True)] == [(t,) for t in range(5)]


def test_local_jobs_each_see_their_own_gpus(tmp_path, monkeypatch):
    options = Options("local", jobs=2, gpus_per_job=2, folder=tmp_path / "jobs", time_min=5)
    assert local_gpus(options, 2, 4) == [(0, 1), (2, 3)]
    with pytest.raises(ValueError, match="2 local jobs of 2 GPUs need 4 GPUs; this machine has 3"):
        local_gpus(options, 2, 3)
    # each job says which devices it sees before it trains (here without a GPU it then fails)
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    exp = paper_experiment("lenet300", **TINY)
    jobs = submit([Unit(exp, (0,), 3), Unit(exp, (1,), 3)], Options("local", jobs=2, gpus_per_job=1,
                  folder=tmp_path / "jobs", time_min=5), str(tmp_path / "no-data"), str(tmp_path / "s"))  # fmt: skip
    wait(jobs)
    assert [next(line for line in job.stdout().splitlines() if line.startswith("on ")) for job in jobs] == [
        f"on cuda (CUDA_VISIBLE_DEVICES={gpu}), {torch.get_num_threads()} thread"
        + ("s" if torch.get_num_threads() > 1 else "")
        for gpu in (0, 1)
    ]


def test_slurm_job_states_come_from_squeue_and_a_job_it_no_longer_lists_has_ended():
    from lth_lib.slurm import QueueWatcher, _minutes

    watcher = QueueWatcher(delay_s=10)
    for job_id in ("5", "6", "7", "8"):
        watcher.register_job(job_id)
    assert watcher._make_command() == ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%N"]
    watcher._info_dict.update(watcher.read_info(b"5|RUNNING|vm\n6|CANCELLED|vm\n8|REQUEUED|\n"))
    states = {job_id: watcher.get_state(job_id, mode="cache") for job_id in ("5", "6", "7", "8")}
    assert states == {"5": "RUNNING", "6": "CANCELLED", "7": "ENDED", "8": "REQUEUED"}
    assert [watcher.is_done(j, mode="cache") for j in ("5", "6", "7", "8")] == [False, True, True, False]
    # sinfo's time limits, in minutes
    limits = ["infinite", "5:00", "30", "2:00:00", "1-00:00:00", "1-12:30:59"]
    assert [_minutes(limit) for limit in limits] == [None, 5, 30, 120, 1440, 2190]
