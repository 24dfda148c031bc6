"""SLURM as `lth_lib.cluster` uses it: submitit's executor, its jobs followed with `squeue`
(which needs no job accounting), and what the cluster accepts, checked before submitting.

submitit asks `sacct` for its jobs' states. On a cluster without accounting (no slurmdbd:
a laptop's test cluster, `scripts/slurm-local`) every poll fails with a warning, and a
job that dies without writing its result is never seen to end. `squeue --states=all`
answers everywhere: it lists a finished job with its final state for `MinJobAge`
(SLURM's default: 5 minutes) and then forgets it, which says it has ended; its result
file, or its absence, says how.
"""

from __future__ import annotations

import subprocess

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

# a job in any other state has ended (squeue's names, and ENDED: no longer listed)
UNFINISHED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
              "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}  # fmt: skip
POLL_S = 10  # the longest wait between two squeue calls while jobs run


class QueueWatcher(SlurmInfoWatcher):
    """The states of this user's jobs, from one `squeue` call for all of them."""

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        listed = {}
        for line in text.splitlines():
            job_id, state, nodes = line.strip().split("|")
            listed[job_id] = {"JobID": job_id, "State": state, "NodeList": nodes}
        ended = {job_id: {"JobID": job_id, "State": "ENDED"} for job_id in self._registered - listed.keys()}
        return {**ended, **listed}

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).split()[0] not in UNFINISHED | {"UNKNOWN"}


class SlurmJob(submitit.SlurmJob):
    watcher = QueueWatcher(delay_s=POLL_S)


class SlurmExecutor(submitit.SlurmExecutor):
    job_class = SlurmJob


def partitions() -> dict[str, int | None]:
    """The cluster's partitions and their time limits in minutes (None: no limit), the
    default one first; ValueError where no SLURM cluster answers."""
    try:
        command = ["sinfo", "--noheader", "--format=%P %l"]
        listing = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"no SLURM cluster answers here: sinfo: {error}") from None
    if listing.returncode != 0:
        raise ValueError(f"no SLURM cluster answers here: sinfo: {listing.stderr.strip()}")
    found = {}
    for line in listing.stdout.splitlines():
        name, limit = line.split()
        found[name.rstrip("*")] = (name.endswith("*"), _minutes(limit))
    return {name: limit for name, (_, limit) in sorted(found.items(), key=lambda item: not item[1][0])}


def check_request(partition: str | None, time_min: int) -> None:
    """A ValueError, before anything is submitted, for a partition the cluster does not
    have or a time limit longer than the partition's."""
    known = partitions()
    if not known:
        raise ValueError("the SLURM cluster here has no partition")
    name = partition or next(iter(known))
    if name not in known:
        raise ValueError(f"SLURM has no partition {name!r}; its partitions: {', '.join(known)}")
    limit = known[name]
    if limit is not None and time_min > limit:
        raise ValueError(f"--time {time_min} is longer than partition {name!r} allows ({limit} minutes)")


def _minutes(limit: str) -> int | None:
    """A time limit as sinfo prints it ([days-]hours:minutes:seconds, minutes:seconds,
    minutes, infinite) in whole minutes, rounded down; None for no limit."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 24 * 60 + hours * 60 + minutes + seconds // 60
