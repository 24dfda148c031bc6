"""Beyond one machine: the experiments' trials as jobs on a SLURM cluster, or as local
processes, through submitit (`pip install -e ".[cluster]"`).

    python -m lth_lib.regenerate --executor slurm --partition gpu --jobs 10 --time 240
    python -m lth_lib.regenerate --executor local --jobs 2 --scale smoke

The work is cut into units: one group of trials of one experiment (`schedule.trial_groups`
on the jobs' device), which trains alone to exactly the numbers a run of the whole
experiment gives on that machine. The units of every experiment the notebooks draw are
dealt to `--jobs` jobs, balanced by their training iterations; each job trains its units
in turn (`lottery.train_trials`) into one results root, which must be on a filesystem
that every node sees and that supports file locks. A job that times out or is pre-empted
is checkpointed and requeued by submitit (up to 3 times), and resumes from the store:
every finished level is kept. A failed job is reported with its log; running the same
command again resumes. When the jobs are done, the notebooks run as usual and draw from
the filled store. Stopping the command (Ctrl-C, SIGTERM) cancels its jobs (`cancel`):
what they finished stays stored. Before anything is submitted, `check` refuses what the
jobs could not do (a results root this machine cannot write, a partition or time limit
the cluster does not have).

On a GPU a paper experiment is one unit (one stack of 35 networks); `split_trials` makes
each trial a unit, so that its trials spread over GPU jobs (stacks of 7 round differently
in the last bits). Local GPU jobs each see their own devices (`local_gpus`). SLURM jobs
are followed with `squeue` (`lth_lib.slurm`), so a cluster without job accounting works
as well as one with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from lth_lib.lottery import train_trials
from lth_lib.models import multiply_adds
from lth_lib.protocol import Experiment
from lth_lib.schedule import default_max_members, first_iteration, level_size, trial_groups

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class Unit:
    """One group of trials of one experiment: what a job trains at a time."""

    experiment: Experiment
    trials: tuple[int, ...]
    max_members: int  # networks at once, which fixes the group (`schedule.trial_groups`)

    @property
    def cost(self) -> int:
        """Multiply-adds of its training's forward passes (evaluation left out): what `deal` balances."""
        exp, trials = self.experiment, len(self.trials)
        steps = sum(
            level_size(exp, level, trials) * (exp.training.iterations - first_iteration(exp, [level]))
            for level in range(exp.pruning.rounds + 1)
        )
        return steps * exp.training.batch_size * multiply_adds(exp.network)

    def __str__(self) -> str:
        exp = self.experiment
        trials = ",".join(map(str, self.trials))
        return f"{exp.network} {exp.pruning.strategy} {exp.identity()} trial{'s' if len(self.trials) > 1 else ''} {trials}"


@dataclass(frozen=True)
class Options:
    """Where and how the jobs run (`python -m lth_lib.regenerate --help`)."""

    executor: str = "local"  # "local" (processes on this machine) or "slurm"
    jobs: int = 2  # how many jobs the units are dealt to
    folder: Path = Path("out/jobs")  # submitit's pickles and each job's logs
    partition: str | None = None  # SLURM partition (None: the cluster's default)
    gpus_per_job: int = 0  # GPUs per job (0: the jobs train on CPUs); local jobs get distinct ones
    cpus_per_job: int | None = None  # torch threads (SLURM: cores) per job (None: see `threads`)
    time_min: int = 24 * 60  # each job's time limit; a job past it is requeued and resumes
    split_trials: bool = False  # one trial per unit, so that one experiment's trials spread over jobs
    warning_s: int = 90  # SLURM signals this long (to 30 s more) before time_min: submitit requeues the job

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; choose one of: {', '.join(EXECUTORS)}")
        for name in ("jobs", "time_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_job < 0 or (self.cpus_per_job is not None and self.cpus_per_job < 1):
            raise ValueError("gpus_per_job must be at least 0 and cpus_per_job at least 1")
        if self.executor == "local" and self.partition:
            raise ValueError("a partition is a SLURM option: use it with the slurm executor")

    @property
    def device(self) -> str:
        """Where the jobs train."""
        return "cuda" if self.gpus_per_job else "cpu"

    @property
    def threads(self) -> int:
        """Torch threads per job: `cpus_per_job`, else locally as many as one process here uses
        (so a job's float rounding, which for Conv depends on the thread count, is a serial
        run's), on SLURM 1."""
        if self.cpus_per_job is not None:
            return self.cpus_per_job
        if self.executor == "local":
            import torch

            return torch.get_num_threads()
        return 1


def local_gpus(options: Options, jobs: int, visible: int) -> list[tuple[int, ...]]:
    """The GPUs each of `jobs` local jobs sees (its CUDA_VISIBLE_DEVICES), `visible` being
    how many this machine has: distinct ones, `options.gpus_per_job` each; ValueError where
    they do not fit."""
    need = jobs * options.gpus_per_job
    if need > visible:
        raise ValueError(
            f"{jobs} local jobs of {options.gpus_per_job} GPU{'s' if options.gpus_per_job > 1 else ''} need "
            f"{need} GPUs; this machine has {visible}: give fewer --jobs or --gpus-per-job"
        )
    per = options.gpus_per_job
    return [tuple(range(i * per, (i + 1) * per)) for i in range(jobs)]


def units(experiments: list[Experiment], device: str, split_trials: bool = False) -> list[Unit]:
    """Every trial group of `experiments` (each experiment once) as trained on `device`;
    with `split_trials`, one trial per group (at most one trial's networks at once)."""
    out, seen = [], set()
    for exp in experiments:
        if exp.identity() in seen:
            continue
        seen.add(exp.identity())
        max_members = default_max_members(exp.network, device, level_size(exp, 1, trials=1))
        if split_trials:
            max_members = min(max_members, level_size(exp, 1, trials=1))
        out += [Unit(exp, tuple(group), max_members) for group in trial_groups(exp, max_members)]
    return out


def deal(work: list[Unit], jobs: int) -> list[list[Unit]]:
    """`work` dealt to at most `jobs` jobs, the costliest units first, each to the job with
    the least work so far; each job's units in `work`'s order (no job left empty)."""
    loads: list[list[Unit]] = [[] for _ in range(min(jobs, len(work)))]
    for unit in sorted(work, key=lambda u: -u.cost):
        min(loads, key=lambda units: sum(u.cost for u in units)).append(unit)
    return [sorted(units, key=work.index) for units in loads]


class TrainUnits:
    """A job: train its units in turn into the results store. submitit calls `checkpoint`
    when the job is about to time out or is pre-empted and requeues what it returns: the
    same units, which resume from the store."""

    def __init__(self, units: list[Unit], data_root: str | None, results_root: str, device: str, threads: int,
                 portable: str | None = None):  # fmt: skip
        self.units, self.data_root, self.results_root, self.portable = (
            units,
            data_root,
            results_root,
            portable,
        )
        self.device, self.threads = device, threads

    def __call__(self) -> list[str]:
        import torch

        torch.set_num_threads(self.threads)
        gpus = (
            f" (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})"
            if self.device == "cuda"
            else ""
        )
        print(f"on {self.device}{gpus}, {self.threads} thread{'s' if self.threads > 1 else ''}", flush=True)
        for unit in self.units:
            print(f"training {unit}", flush=True)
            train_trials(unit.experiment, list(unit.trials), data_root=self.data_root, results_root=self.results_root,
                         device=self.device, max_members=unit.max_members, progress=True,
                         portable=self.portable)  # fmt: skip
        return [str(unit) for unit in self.units]

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def slurm_parameters(options: Options) -> dict:
    """submitit's SLURM parameters for `options`."""
    parameters = {"time": options.time_min, "cpus_per_task": options.threads, "job_name": "lth",
                  "signal_delay_s": options.warning_s}  # fmt: skip
    if options.partition:
        parameters["partition"] = options.partition
    if options.gpus_per_job:
        parameters["gpus_per_node"] = options.gpus_per_job
    return parameters


def executor(options: Options):
    """A submitit executor for `options`, its files in `options.folder`."""
    try:
        import submitit
    except ImportError:
        raise ImportError('--executor needs submitit: pip install -e ".[cluster]"') from None
    if options.executor == "slurm":
        from lth_lib.slurm import SlurmExecutor

        ex = SlurmExecutor(folder=options.folder)
        ex.update_parameters(**slurm_parameters(options))
    else:
        ex = submitit.LocalExecutor(folder=options.folder)
        # Jobs sharing this machine's cores with OpenMP's default spin-waiting threads slow
        # each other down ~10x (two LeNet jobs of 2 threads on 2 cores: 8 steps/s each, one
        # alone 102); waiting threads that sleep keep the total (59 each). Numbers unchanged.
        ex.update_parameters(timeout_min=options.time_min, gpus_per_node=options.gpus_per_job,
                             setup=["export OMP_WAIT_POLICY=PASSIVE"])  # fmt: skip
    return ex


def check(options: Options, results_root: str) -> None:
    """A ValueError, before any job is submitted, where the jobs could not run: a results
    root this machine cannot write or lock files in, a SLURM partition the cluster does not
    have or a time limit it refuses (`lth_lib.slurm.check_request`)."""
    root = Path(results_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".written-by-{os.getpid()}"
        with open(probe, "w") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the store's locks (`store.folder_locks`)
            except ImportError:
                pass
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"the jobs cannot write the results root {root} ({error.strerror or error}): give LTH_RESULTS "
            "(or results_root) a folder on a filesystem every node can write, with file locks"
        ) from None
    if options.executor == "slurm":
        from lth_lib.slurm import check_request

        check_request(options.partition, options.time_min)


def submit(work: list[Unit], options: Options, data_root: str | None, results_root: str,
           portable: str | None = None) -> list:  # fmt: skip
    """Submit `work` as `options.jobs` jobs (resuming from the portable store `portable` and
    the results store, as `lottery.run` does); the submitit jobs, recorded in
    `options.folder`/jobs.json for `collect`. Bad options, or a submission SLURM refuses,
    raise ValueError with nothing left submitted."""
    check(options, results_root)
    dealt = deal(work, options.jobs)
    gpus = None
    if options.executor == "local" and options.gpus_per_job:
        import torch

        gpus = local_gpus(options, len(dealt), torch.cuda.device_count())
    ex = executor(options)
    Path(options.folder).mkdir(parents=True, exist_ok=True)
    jobs = []
    try:
        for i, units in enumerate(dealt):
            if gpus is not None:
                ex.update_parameters(visible_gpus=gpus[i])
            job = ex.submit(
                TrainUnits(units, data_root, results_root, options.device, options.threads, portable)
            )
            jobs.append(job)
    except BaseException as error:  # a refusal, or Ctrl-C between two submissions: none is left running
        from submitit.core.utils import FailedJobError  # what sbatch's refusal raises

        cancel(jobs)
        if isinstance(error, FailedJobError):
            raise ValueError(f"SLURM refused the jobs: {_reason(error)}") from None  # noqa: TRY004
        raise
    record = {"executor": options.executor, "jobs": [
        {"job_id": job.job_id, "units": [str(u) for u in units]} for job, units in zip(jobs, dealt)
    ]}  # fmt: skip
    (Path(options.folder) / "jobs.json").write_text(json.dumps(record, indent=2))
    return jobs


def collect(folder: Path) -> list:
    """The SLURM jobs that a submission without waiting recorded in `folder`."""
    from lth_lib.slurm import SlurmJob

    record = json.loads((folder / "jobs.json").read_text())
    if record["executor"] != "slurm":
        raise ValueError(
            f"{folder} holds {record['executor']} jobs: only SLURM jobs outlive the command that started them"
        )
    return [SlurmJob(folder=folder, job_id=job["job_id"]) for job in record["jobs"]]


def wait(jobs: list) -> list[str]:
    """Wait for every job; a line per failed job, with its error and the log to read."""
    import submitit

    failures = []
    for job in jobs:
        try:
            job.result()
        except Exception as error:  # noqa: BLE001 -- a job's failure of any kind is reported, not raised
            state = f" ({job.state})" if isinstance(job, submitit.SlurmJob) else ""  # SLURM's word for it
            failures.append(f"job {job.job_id} failed{state}: {_reason(error)}; its log: {job.paths.stderr}")
    return failures


def cancel(jobs: list, grace_s: float = 10) -> list[str]:
    """Stop every job of `jobs` that has not finished and wait until its processes have
    ended (its finished levels stay stored; the level it was training is lost); a line per
    job stopped. A job's processes get SIGINT, as Ctrl-C gives them, then SIGKILL: a local
    job's after `grace_s`, a SLURM job's through `scancel` after the cluster's KillWait."""
    import submitit

    stopped = []
    local = [
        job for job in jobs if getattr(job, "_process", None) is not None and job._process.poll() is None
    ]
    if local:
        trees = {job: _process_tree(job._process.pid) for job in local}
        for pid in (pid for tree in trees.values() for pid in tree):
            _signal(pid, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while any(_alive(pid) for tree in trees.values() for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in (pid for tree in trees.values() for pid in tree if _alive(pid)):
            _signal(pid, signal.SIGKILL)
        for job in local:
            job._process.wait()
            stopped.append(f"job {job.job_id}: stopped (its log: {job.paths.stderr})")
    slurm = [job for job in jobs if isinstance(job, submitit.SlurmJob) and not job.done(force_check=True)]
    if slurm:
        import subprocess

        ids = [job.job_id for job in slurm]
        subprocess.run(["scancel", "--signal=INT", *ids], check=False, capture_output=True)  # as at Ctrl-C
        subprocess.run(["scancel", *ids], check=False, capture_output=True)  # then the jobs themselves
        while not all(job.done(force_check=True) for job in slurm):
            time.sleep(1)
        stopped += [f"job {job.job_id}: cancelled (its log: {job.paths.stderr})" for job in slurm]
    return stopped


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc; where there is none, `pid` alone)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped, does not)."""
    if Path("/proc").is_dir():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass  # it has ended already


def _reason(error: Exception) -> str:
    """The exception a job raised, from the traceback submitit reports, else its first line."""
    raised = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b.*)$", str(error), re.MULTILINE)
    if raised:
        return raised[-1]
    if "has not produced any output" in str(error):  # submitit: it was killed, or cancelled
        return "it ended without a result"
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
