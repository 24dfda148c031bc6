"""`regenerate --executor slurm` against a real SLURM cluster (`scripts/slurm-local start`,
which .ci/run starts): the serial run's figures, two commands at once over one store with
--no-wait and --collect, a job past its time limit and a pre-empted one requeued, scancel,
a stopped command, and requests refused before anything is submitted; and a stopped run
of local jobs, which needs no cluster.

The SLURM tests run where `sinfo` reaches a cluster: SLURM_CONF's, else the one
scripts/slurm-local starts. Elsewhere they are skipped, and under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import unavailable

from lth_lib.lottery import run
from lth_lib.notebook import NotebookParameters
from lth_lib.protocol import paper_experiment
from lth_lib.regenerate import drawn_experiments

submitit = pytest.importorskip("submitit")
PROJECT = Path(__file__).resolve().parents[1]
SLURM_LOCAL = PROJECT / "scripts" / "slurm-local"
# lenet_mnist at smoke scale, trained long enough (about 2 s a level on one core) to be
# stopped mid-way: its levels are stored one by one
LONGER = {"iterations": 600, "eval_every": 200}


def _longer(rounds: int) -> tuple[str, ...]:
    """The regenerate arguments of LONGER with `rounds` rounds (rounds + 1 levels)."""
    return (
        "lenet_mnist",
        *(word for k, v in {**LONGER, "rounds": rounds}.items() for word in ("-p", k, str(v))),
    )


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The environment that reaches the cluster (skip, or fail under CI, where none answers)."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env:
        line = _output(["bash", str(SLURM_LOCAL), "env"])
        local = line.strip().partition("SLURM_CONF=")[2]
        if local and Path(local).is_file():
            env["SLURM_CONF"] = local
    try:
        answer = subprocess.run(["sinfo", "--noheader"], check=False, env=env, capture_output=True, text=True,
                                timeout=30)  # fmt: skip
    except OSError:
        unavailable("no SLURM commands here: scripts/slurm-local start installs and starts a cluster")
    if answer.returncode != 0 or not answer.stdout.strip():
        unavailable(f"no SLURM cluster answers ({answer.stderr.strip()}): scripts/slurm-local start")
    return env


@pytest.fixture()
def in_cluster(slurm, monkeypatch) -> dict[str, str]:
    """`slurm`, also in this process's environment (for lth_lib.cluster called directly)."""
    monkeypatch.setenv("SLURM_CONF", slurm.get("SLURM_CONF", ""))
    return slurm


def _output(command: list[str], env: dict | None = None) -> str:
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60).stdout


def _command(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lth_lib.regenerate", "--scale", "smoke", "--out", str(folder / "out"),
            "--figures", str(folder / "figures"), *args]  # fmt: skip


def _env(env: dict, data: Path, results: Path, **more: str) -> dict[str, str]:
    return {**env, "LTH_DATA": str(data), "LTH_RESULTS": str(results), **more}


def _regenerate(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(folder, *args), check=False, cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def _start(folder: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(_command(folder, *args), cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _said(done) -> str:
    out, err = (done.stdout, done.stderr) if isinstance(done, subprocess.CompletedProcess) else done
    return f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"


def _figures(folder: Path) -> dict[str, bytes]:
    """Every file a regeneration drew into `folder`, the kept notebooks without the one line
    that names the folder (their figures_dir parameter)."""
    drawn = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if path.suffix == ".ipynb":
            content = content.replace(str(folder).encode(), b"FIGURES")
        drawn[str(path.relative_to(folder))] = content
    return drawn


def _levels(results: Path) -> dict[str, int]:
    """Every level file of the store's experiments (not of its shared dense networks), with
    when it was written."""
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.glob("*/trial_*/level_*.json")}


def _wait_for(condition, what: str, timeout_s: float = 180, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {_said(process.communicate())}")
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


def _job_processes(jobs_folder: Path) -> list[int]:
    """Processes on this machine that run a job of `jobs_folder` (submitit's task, or the
    local executor's controller, names the folder on its command line)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            any(str(jobs_folder).encode() in word for word in words)
            and int(cmdline.parent.name) != os.getpid()
        ):
            found.append(int(cmdline.parent.name))
    return found


def _queue(env: dict, job_ids: list[str]) -> str:
    return _output(
        ["squeue", "--noheader", "--states=all", "--format=%i %T", "--jobs", ",".join(job_ids)], env
    )


def _job_ids(folder: Path) -> list[str]:
    return [job["job_id"] for job in json.loads((folder / "out" / "jobs" / "jobs.json").read_text())["jobs"]]


@pytest.fixture(scope="module")
def serial(local_data, tmp_path_factory) -> dict[str, bytes]:
    """The controls notebook's figures from a serial run on one thread, the SLURM jobs' count."""
    folder = tmp_path_factory.mktemp("serial")
    done = _regenerate(
        folder, _env(os.environ, local_data, folder / "results", OMP_NUM_THREADS="1"), "controls"
    )
    assert done.returncode == 0, _said(done)
    return _figures(folder / "figures")


def test_slurm_jobs_draw_the_serial_runs_figures(slurm, local_data, serial, tmp_path):
    done = _regenerate(tmp_path, _env(slurm, local_data, tmp_path / "results"), "controls", "--executor",
                       "slurm", "--jobs", "2", "--time", "10")  # fmt: skip
    assert done.returncode == 0, _said(done)
    assert "2 trial groups of 2 experiments as 2 slurm jobs" in done.stdout  # LeNet-300-100 and Conv-2
    assert "sacct" not in done.stdout + done.stderr  # no accounting here, and no warning about it
    assert _figures(tmp_path / "figures") == serial


def test_two_commands_at_once_one_collected_later_share_one_store(slurm, local_data, tmp_path):
    env = _env(slurm, local_data, tmp_path / "results")
    later = _start(tmp_path / "later", env, *_longer(4), "--executor", "slurm", "--jobs", "1", "--no-wait")
    now = _start(tmp_path / "now", env, *_longer(4), "--executor", "slurm", "--jobs", "1")
    submitted = later.communicate(timeout=120)
    assert later.returncode == 0 and "submitted; to wait for them" in submitted[0], _said(submitted)
    waited = now.communicate(timeout=300)
    assert now.returncode == 0, _said(waited)
    collected = _regenerate(
        tmp_path / "later", env, *_longer(4), "--collect", str(tmp_path / "later" / "out" / "jobs")
    )
    assert collected.returncode == 0, _said(collected)
    assert "waiting for the 1 jobs recorded in" in collected.stdout
    assert _figures(tmp_path / "later" / "figures") == _figures(tmp_path / "now" / "figures")
    logs = [p.read_text() for p in tmp_path.glob("*/out/jobs/*_log.err")]
    waited = [
        log for log in logs if "is training it" in log
    ]  # the store's lock: one job waited for the other
    assert len(logs) == 2 and len(waited) >= 1, logs
    [exp] = drawn_experiments(NotebookParameters.of({"scale": "smoke", **LONGER, "rounds": 4}, "lenet_mnist"))
    stored = run(exp, data_root=local_data, results_root=tmp_path / "results", progress=False, training=False)
    assert {r.level for r in stored.records} == set(range(5))  # every level, read back with its checksum


def test_a_job_past_its_time_limit_or_preempted_is_requeued_and_resumes(in_cluster, local_data, tmp_path):
    from lth_lib.cluster import Options, Unit, submit, wait

    # SLURM sends the warning signal at its first time-limit check (every 30 s) that finds the
    # end nearer than the warning plus 30 s (measured here: 4 s after the start, with a 1-minute
    # limit 40 s early): a 2-minute limit 60 s early signals 30 to 60 s after the start, after
    # the first pruned level is stored (about 13 s, starting included) and well before this
    # job's end (40 levels of about 2.9 s on one core)
    exp = paper_experiment("lenet300", iterations=1800, eval_every=900, eval_examples=300, rounds=39, trials=1,
                           controls=())  # fmt: skip
    unit, data = Unit(exp, (0,), 16), str(local_data)
    [reference] = submit([unit], Options("slurm", jobs=1, folder=tmp_path / "ref-jobs", time_min=10), data,
                         str(tmp_path / "reference"))  # fmt: skip
    [job] = submit([unit], Options("slurm", jobs=1, folder=tmp_path / "jobs", time_min=2, warning_s=60), data,
                   str(tmp_path / "store"))  # fmt: skip

    def restarts() -> int:
        shown = _output(["scontrol", "show", "job", job.job_id])
        return int(shown.split("Restarts=")[1].split()[0])

    _wait_for(lambda: restarts() == 1, "requeue at the time limit", timeout_s=120)
    before_timeout = _levels(tmp_path / "store")
    # the resumed job may run to its end: only the first run met the short limit
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "TimeLimit=10"], check=True)
    _wait_for(lambda: len(_levels(tmp_path / "store")) > len(before_timeout), "a level after the requeue")
    before_preemption = _levels(tmp_path / "store")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)  # as a pre-emption does
    assert wait([job, reference]) == []
    log = job.stdout() + job.stderr()
    assert "Requeued" in log or "requeued" in log, log[-3000:]  # submitit requeued it at the warning signal
    assert log.count(f"training {unit}") == 3 and restarts() == 2  # three starts in all
    after = _levels(tmp_path / "store")
    assert len(before_timeout) >= 1 and {name: after[name] for name in before_preemption} == before_preemption
    assert len(after) == exp.pruning.rounds + 1
    resumed = run(exp, data_root=data, results_root=tmp_path / "store", progress=False, training=False)
    uninterrupted = run(
        exp, data_root=data, results_root=tmp_path / "reference", progress=False, training=False
    )
    assert resumed.records == uninterrupted.records


def _stopped(command: subprocess.Popen, folder: Path, signum: int, env: dict) -> tuple[str, str]:
    """Stop the regenerate `command` with `signum` and check that it cancelled its jobs: what it said."""
    command.send_signal(signum)
    said = command.communicate(timeout=120)
    assert command.returncode == 128 + signum, _said(said)
    assert "cancelling the 1 jobs" in said[1] and "run the same command again to resume" in said[1], _said(
        said
    )
    assert _job_processes(folder / "out" / "jobs") == []  # no job's process is left on this machine
    return said


def test_a_cancelled_job_or_a_stopped_command_keeps_its_levels_and_the_same_command_resumes(slurm, local_data,
                                                                                            tmp_path):  # fmt: skip
    env, longer = _env(slurm, local_data, tmp_path / "results"), _longer(9)
    command = _start(tmp_path, env, *longer, "--executor", "slurm", "--jobs", "1")
    _wait_for(lambda: len(_levels(tmp_path / "results")) >= 1, "a stored level", process=command)
    [job_id] = _job_ids(tmp_path)
    subprocess.run(["scancel", job_id], env=env, check=True)
    said = command.communicate(timeout=120)
    assert command.returncode == 1, _said(said)
    log = tmp_path / "out" / "jobs" / f"{job_id}_0_log.err"
    assert f"job {job_id} failed (CANCELLED): it ended without a result; its log: {log}" in said[1], _said(
        said
    )
    assert log.is_file() and "run the same command again to resume" in said[1]
    cancelled = _levels(tmp_path / "results")
    # the same command again, stopped with Ctrl-C once it has stored one more level
    command = _start(tmp_path, env, *longer, "--executor", "slurm", "--jobs", "1")
    _wait_for(lambda: len(_levels(tmp_path / "results")) > len(cancelled), "one more level", process=command)
    _stopped(command, tmp_path, signal.SIGINT, env)
    [job_id] = _job_ids(tmp_path)
    assert _queue(env, [job_id]).split()[1] in ("CANCELLED", "FAILED")  # ended, whichever signal ended it
    stopped = _levels(tmp_path / "results")
    assert {name: stopped[name] for name in cancelled} == cancelled and len(stopped) < 10
    again = _regenerate(tmp_path, env, *longer, "--executor", "slurm", "--jobs", "1")
    assert again.returncode == 0, _said(again)
    after = _levels(tmp_path / "results")
    assert {name: after[name] for name in stopped} == stopped and len(
        after
    ) == 10  # resumed, nothing retrained


def test_stopping_a_run_of_local_jobs_ends_their_processes_and_the_same_command_resumes(local_data, tmp_path):
    env, longer = _env(os.environ, local_data, tmp_path / "results"), _longer(4)
    command = _start(tmp_path, env, *longer, "--executor", "local", "--jobs", "1")
    _wait_for(lambda: len(_levels(tmp_path / "results")) >= 1, "a stored level", process=command)
    _stopped(command, tmp_path, signal.SIGTERM, env)
    stopped = _levels(tmp_path / "results")
    assert 1 <= len(stopped) < 5
    again = _regenerate(tmp_path, env, *longer, "--executor", "local", "--jobs", "1")
    assert again.returncode == 0, _said(again)
    after = _levels(tmp_path / "results")
    assert {name: after[name] for name in stopped} == stopped and len(after) == 5


@pytest.mark.parametrize(
    ("options", "results", "message"),
    [
        (("--partition", "nope"), "results", "SLURM has no partition 'nope'; its partitions: debug, short"),
        (("--partition", "short", "--time", "10"), "results",
         "--time 10 is longer than partition 'short' allows (5 minutes)"),
        ((), "a-file/results", "the jobs cannot write the results root"),  # a folder under a file
        (("--gpus-per-job", "1"), "results", "SLURM refused the jobs: "),  # sbatch: the cluster has no GPU
    ],
)  # fmt: skip
def test_a_request_the_cluster_cannot_take_is_refused_before_any_job_runs(slurm, local_data, tmp_path, options,
                                                                          results, message):  # fmt: skip
    (tmp_path / "a-file").write_text("not a folder")
    done = _regenerate(tmp_path, _env(slurm, local_data, tmp_path / results), "lenet_mnist", "--executor", "slurm",
                       *options)  # fmt: skip
    assert done.returncode == 2, _said(done)
    assert message in done.stderr and "nothing submitted" in done.stderr, _said(done)
    assert not (tmp_path / "out" / "jobs" / "jobs.json").exists()
    queued = _output(["squeue", "--me", "--noheader", "--states=all", "--format=%i %o"], slurm)
    assert str(tmp_path) not in queued
