"""Advance a scale's experiments within a time budget, and carry the results between machines.

    python -m lth_lib.advance --scale paper --budget 540 --export OUT   # on a GPU, for 9 minutes
    python -m lth_lib.advance --import OUT                               # back here: merge, then commit
    python -m lth_lib.advance --status                                   # what is stored, what is left

Trains the experiments the notebooks draw (`queue`: at paper scale Figure 5's first
passes first, then in the order of `notebook.NOTEBOOKS`; those a portable store can
resume), each resumed from the portable store (`figures/data/paper/`, committed; out/data/<scale>/ at other scales) and
the results store, and stops cleanly before the budget runs out: a level that would not
finish in time is stopped and dropped (every finished one is kept) and the next
experiment's next level is tried in the time left. The newly finished
levels are written into the portable store and, with --export, packed into DIR as at
most 8 files under 16 MiB (`lth_lib.portable`). The budget counts from the start of the
process.

A resume is exact: another call, on any machine, continues where the last one stopped and
gives the numbers an uninterrupted run gives on that machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from lth_lib.lottery import run
from lth_lib.models import initial_state, stacked
from lth_lib.notebook import NOTEBOOKS, NotebookParameters, first_pass
from lth_lib.portable import (
    ExportError,
    export,
    import_export,
    portable_store,
    resumable,
    stored_folders,
    stored_levels,
    training_times,
)
from lth_lib.protocol import (
    CONTROLS,
    PRECISIONS,
    SCALES,
    TEST_EXAMPLES,
    VALIDATION_EXAMPLES,
    Experiment,
    architecture,
    check_scale,
    paper_experiment,
    training_precision,
)
from lth_lib.pruning import dense_mask
from lth_lib.results import precision_of
from lth_lib.schedule import OutOfTime, default_max_members, job_iterations, level_size, plan, trial_groups
from lth_lib.store import experiment_dir, located, sync
from lth_lib.train import Member, TrainStep, default_device, device_name, evaluate, kernels


def queue(scale: str) -> list[Experiment]:
    """The experiments `advance` trains at `scale`, in order: every experiment the notebooks
    draw with their default parameters (`notebook.NOTEBOOKS`, in its order; below `paper`
    scale only the main job's notebooks, so not Section 4's `deeper`), each once, except
    those a portable store cannot resume from any level (`portable.resumable`: Conv-2's
    one-shot sweep and its late-rewound tickets, whose dense and rewind weights are too
    large to travel). At `paper` scale, Figure 5 comes first (`_soonest`)."""
    found: dict[str, Experiment] = {}
    for name in (n for n, draws in NOTEBOOKS.items() if draws.main_job or scale == "paper"):
        for drawn in NotebookParameters(name, scale).experiments().values():
            for exp in drawn.values():
                found.setdefault(exp.identity(), exp)
    order = _soonest(list(found.values())) if scale == "paper" else list(found.values())
    return [exp for exp in order if resumable(exp)]


def _soonest(experiments: list[Experiment]) -> list[Experiment]:
    """The paper-scale order that draws Figure 5 soonest: Conv-2's first pass (its tickets
    beside one random reinitialisation each, `notebook.first_pass`); then the late-rewound
    tickets of the fully connected networks (LeNet's, cheap on a GPU); then Conv-4's and
    Conv-6's first passes; then `experiments` in their order (the full experiments, with
    the rest of their controls, the one-shot sweeps, dropout, Section 4)."""
    figure5 = [part for exp in NotebookParameters("conv_cifar10", "paper").experiments().values()
               for part in map(first_pass, exp.values()) if part is not None]  # fmt: skip
    late = [exp for exp in experiments
            if exp.pruning.rewind_iteration and not architecture(exp.network).convolutional]  # fmt: skip
    return figure5[:1] + late + figure5[1:] + [exp for exp in experiments if exp not in late]


def describe(exp: Experiment) -> str:
    """An experiment of the queue in a few words: network, strategy, iterative tickets
    without controls, controls other than the paper's two (with their number per ticket),
    dropout, warm-up, rewind iteration."""
    extras = ["tickets only"] * (exp.pruning.strategy == "iterative" and not exp.controls)
    extras += [f"+{exp.control_trials} {' '.join(exp.controls)}"] * bool(
        exp.controls and exp.controls != CONTROLS
    )
    extras += [f"dropout {exp.training.dropout:g}"] * bool(exp.training.dropout)
    extras += [f"warm-up {exp.training.warmup:,}"] * bool(exp.training.warmup)
    extras += [f"k = {exp.pruning.rewind_iteration:,}"] * bool(exp.pruning.rewind_iteration)
    return " ".join([exp.network, exp.pruning.strategy, *extras])


def levels_stored(exp: Experiment, store: Path, trials: list[int] | None = None) -> int:
    """How many levels of `exp` (from level 0 on, without a gap) the portable store holds
    for every trial of `trials` (default: all; in a level's file or in each trial's part),
    for any copy of its data set."""
    trials = list(range(exp.trials)) if trials is None else trials
    best = 0
    for folder in stored_folders(exp, store).values():
        levels = stored_levels(folder, trials)
        best = max(best, next((i for i, level in enumerate(levels) if level != i), len(levels)))
    return best


def seconds_per_step(network: str, members: int, device: str, steps: int = 3) -> float:
    """One training step of `members` stacked networks on `device`, taken as `train` takes
    it (a CUDA graph on a GPU; the paper's batch size, optimizer and augmentation; the
    precision `protocol.training_precision` gives), measured on random data."""
    shape, hparams = architecture(network).input_shape, paper_experiment(network).training
    member, batch = Member(initial_state(network, 0), dense_mask(network), 0), hparams.batch_size
    x = torch.rand(members * batch, *shape, device=device)
    y = torch.randint(0, 10, (members * batch,), device=device)
    idx = torch.arange(members * batch, device=device).view(members, batch)
    precision = training_precision(network, torch.device(device).type)
    with kernels(precision, device):
        take = TrainStep.build(network, [member] * members, hparams, device, precision=precision).feeder(
            x, y, batch
        )
        take(idx)  # warm-up
        return _timed(lambda: [take(idx) for _ in range(steps)], device) / steps


def seconds_per_evaluation(exp: Experiment, members: int, device: str, examples: int = 512) -> float:
    """One evaluation point of `members` stacked networks of `exp` on `device`: validation
    and test examples as `exp` evaluates them (all 5,000 and 10,000 at paper scale), in
    the precision `protocol.training_precision` gives, timed on `examples` random ones and
    scaled to that many. Test examples count at every point: an upper bound where test
    metrics are computed on a grid (`protocol.evaluation_grid`)."""
    shape, count = architecture(exp.network).input_shape, exp.training.eval_examples
    evaluated = (count or VALIDATION_EXAMPLES) + (count or TEST_EXAMPLES)
    network = stacked(exp.network, members).to(device)
    x, y = torch.rand(examples, *shape, device=device), torch.randint(0, 10, (examples,), device=device)
    idx = torch.arange(examples, device=device)
    with kernels(training_precision(exp.network, torch.device(device).type), device):
        evaluate(network, x, y, idx[:8])  # warm-up
        return _timed(lambda: evaluate(network, x, y, idx), device) * evaluated / examples


def _timed(work: Callable[[], object], device: str) -> float:
    """Seconds `work()` takes on `device`, with the GPU's queue drained before and after."""
    if device != "cpu":
        torch.cuda.synchronize()
    started = time.perf_counter()
    work()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def work_left(scale: str, store: Path | None, device: str) -> list[dict]:
    """Per experiment of `scale`: levels stored, levels in all, and an estimate of the
    time left on `device`: each trial group's levels still to train (a level's trials may
    finish in different calls), at the measured time of a step plus that of an evaluation
    point every `eval_every` steps. Beside it, where the store records levels of the same
    network trained on a GPU (`stored_gpu_times`), the networks left at their time there:
    `gpu_seconds` and `gpu` (where, in what precision, how many at once)."""
    rows, measured = [], {}
    on_gpu = stored_gpu_times(scale, store) if store is not None else {}
    for exp in queue(scale):
        max_members = default_max_members(exp.network, device, level_size(exp, 1, trials=1))
        groups = trial_groups(exp, max_members)
        iterations = networks = 0
        for group in groups:
            done = levels_stored(exp, store, group) if store is not None else 0
            jobs = [job for job in plan(exp, max_members, len(group)) if job[0] >= done]
            iterations += job_iterations(exp, jobs, max_members, len(group))
            networks += sum(
                level_size(exp, level, len(group)) for level in range(done, exp.pruning.rounds + 1)
            )
        members = min(max_members, level_size(exp, 1, len(groups[0])))
        key = (exp.network, members, exp.training.eval_every, exp.training.eval_examples)
        if iterations and key not in measured:
            evaluation = seconds_per_evaluation(exp, members, device)
            measured[key] = (
                seconds_per_step(exp.network, members, device) + evaluation / exp.training.eval_every
            )
        seconds = iterations * measured.get(key, 0.0)
        done = levels_stored(exp, store) if store is not None else 0
        per_network, gpu = on_gpu.get(exp.network, (None, ""))
        rows.append({"experiment": exp, "done": done, "levels": exp.pruning.rounds + 1, "seconds": seconds,
                     "gpu_seconds": None if per_network is None else networks * per_network, "gpu": gpu})  # fmt: skip
    return rows


def stored_trained(scale: str, store: Path) -> Iterator[tuple[Experiment, int, dict]]:
    """Each stored level of `scale`'s queue with how it trained: (experiment, level, its
    `trained` record, as `portable.training_times` reads it)."""
    for exp in queue(scale):
        for folder in stored_folders(exp, store).values():
            for level, trained in training_times(folder):
                yield exp, level, trained


def stored_gpu_times(scale: str, store: Path) -> dict[str, tuple[float, str]]:
    """Per network of `scale`'s queue, the median seconds one network took to train a level
    (evaluation included) on a GPU, as the store's levels record it (`training_times`: a
    job's time over its networks), and how the last of them trained, e.g.
    {"conv2": (87.7, "NVIDIA H100 80GB HBM3, float32, 5 at once")}."""
    found: dict[str, list[tuple[float, str]]] = {}
    for exp, _, trained in stored_trained(scale, store):
        if not trained["device"].startswith("CPU"):
            how = f"{trained['device']}, {precision_of(trained)}, {trained['at_once']} at once"
            found.setdefault(exp.network, []).append((trained["seconds"] / trained["networks"], how))
    return {
        network: (statistics.median(s for s, _ in times), times[-1][1]) for network, times in found.items()
    }


def work_left_text(rows: list[dict], device: str) -> str:
    """`work_left` as a table, with the totals; the time on a GPU at the stored times where
    there are any, and the GPUs they were measured on."""
    gpu = any(row["gpu_seconds"] is not None for row in rows)
    head = f"{'experiment':<44}{'levels stored':>15}{'time left on ' + device:>22}"
    lines = [head + (f"{'on a GPU, at stored times':>28}" if gpu else "")]
    for row in rows:
        at_stored = "" if not gpu else "–" if row["gpu_seconds"] is None else _duration(row["gpu_seconds"])
        lines.append(f"{describe(row['experiment']):<44}{row['done']:>9} of {row['levels']:<3}"
                     f"{_duration(row['seconds']):>22}" + (f"{at_stored:>28}" if gpu else ""))  # fmt: skip
    total = f"{'total':<44}{'':>15}{_duration(sum(r['seconds'] for r in rows)):>22}"
    known = [r["gpu_seconds"] for r in rows if r["gpu_seconds"] is not None]
    lines.append(total + (f"{_duration(sum(known)) + ' (those known)':>28}" if gpu else ""))
    hows = {r["experiment"].network: r["gpu"] for r in rows if r["gpu"]}
    lines += [
        f"stored times of {network}: median per network and level, last on {how}"
        for network, how in hows.items()
    ]
    return "\n".join(lines)


def training_times_text(scale: str, store: Path) -> str:
    """How long each stored level of `scale`'s experiments trained, and where: the time
    per level, as the store records it (levels trained together share one time)."""
    lines = [f"{'experiment':<44}{'level':>6}{'networks':>10}{'seconds':>9}  device"]
    for exp, level, trained in stored_trained(scale, store):
        others = trained["levels_in_job"] - 1
        together = f" (trained with {others} other level{'s' if others > 1 else ''})" if others else ""
        lines.append(
            f"{describe(exp):<44}{level:>6}{trained['networks']:>10}"
            f"{trained['seconds']:>9.1f}  {trained['device']}, {trained['at_once']} at once, "
            f"torch {trained['torch']}{together}"
        )
    return "\n".join(lines) if len(lines) > 1 else "no stored level records its training time"


def advance(
    scale: str,
    budget: float,
    store: Path,
    results_root: Path | None = None,
    data_root: Path | None = None,
    device: str | None = None,
    dataset: str | None = None,
    started: float | None = None,
    precision: str | None = None,
) -> list[Path]:
    """Train `scale`'s experiments (those of `dataset` only, if given) in order until the
    budget (seconds from `started`, a `time.monotonic()` value; default now) is nearly
    spent; write the newly finished levels into the portable store `store`; the level
    files written. An error in one experiment stops the run like the budget does, and is
    raised (AdvanceFailed) once the levels finished before it are written. `precision`: as
    `lottery.run` takes it (default: each network's, `protocol.training_precision`)."""
    end = (time.monotonic() if started is None else started) + budget
    margin = min(30.0, max(3.0, 0.05 * budget))  # to write and pack the results
    deadline = end - margin
    finished: list[Path] = []  # kept whatever happens
    stopped, exp, failed = None, None, False
    with _alarm(end - margin / 2):
        try:
            for exp in queue(scale):
                if dataset is not None and architecture(exp.network).dataset != dataset:
                    continue
                if time.monotonic() >= deadline:
                    raise OutOfTime("the budget was spent before this experiment")
                print(f"{describe(exp)}: {levels_stored(exp, store)} of {exp.pruning.rounds + 1} levels stored",
                      flush=True)  # fmt: skip
                finished.append(experiment_dir(located(exp, None, data_root, None, True), results_root))
                try:
                    run(exp, data_root=data_root, results_root=results_root, device=device, portable=store,
                        deadline=deadline, precision=precision)  # fmt: skip
                except OutOfTime as reason:  # its next level would not fit: a later experiment's may
                    stopped = f"stopped at {describe(exp)}: {reason}"
                    print(f"{stopped}; going on with the next experiment", flush=True)
        except Exception as reason:  # noqa: BLE001 -- an error, too, keeps the levels finished before it
            failed = not isinstance(reason, OutOfTime)
            if failed:
                traceback.print_exc()
            stopped = f"{'failed' if failed else 'stopped'}{f' at {describe(exp)}' if exp else ''}: {reason}"
    written = [path for directory in finished if directory.is_dir() for path in sync(directory, store)]
    spent = time.monotonic() - (end - budget)
    print(
        f"{stopped or 'every experiment is complete'} ({spent:.0f} s of the {budget:.0f} s budget)",
        flush=True,
    )
    if failed:
        raise AdvanceFailed(written)
    return written


class AdvanceFailed(RuntimeError):
    """An experiment failed with an error; the levels finished before it were kept."""

    def __init__(self, written: list[Path]):
        super().__init__(f"an experiment failed; {len(written)} finished level files were kept")
        self.written = written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lth_lib.advance", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="paper", help=f"one of {', '.join(SCALES)} (default: paper)")
    parser.add_argument("--budget", type=float, help="seconds this process may run, everything included")
    parser.add_argument("--export", type=Path, metavar="DIR", help="pack the newly finished levels into DIR")
    parser.add_argument(
        "--import", dest="import_dir", type=Path, metavar="DIR", help="merge an export into the store"
    )
    parser.add_argument(
        "--status", action="store_true", help="print what is stored and what is left, and exit"
    )
    parser.add_argument(
        "--store",
        type=Path,
        help="the portable store (default: figures/data/paper/, committed; out/data/<scale>/ for others)",
    )
    parser.add_argument(
        "--results", type=Path, help="the results store (default: LTH_RESULTS, else results/)"
    )
    parser.add_argument(
        "--data", type=Path, help="the data folder (default: LTH_DATA, else torchvision's download)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda where there is one)")
    parser.add_argument(
        "--dataset", choices=("mnist", "cifar10"), help="only the experiments on this data set"
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, help="train in this precision (default: each network's protocol's)"
    )
    args = parser.parse_args(argv)
    try:
        check_scale(args.scale)
    except ValueError as error:
        parser.error(str(error))
    store = args.store or portable_store(args.scale)
    if store is None:
        parser.error("outside a checkout of the project, give the portable store with --store")
    device = str(default_device(args.device))
    if args.import_dir is not None:
        try:
            added = import_export(args.import_dir, store)
        except ExportError as error:
            print(f"refused: {error}; {store} is as it was", file=sys.stderr)
            return 1
        print(f"added {len(added)} level files to {store}")
        return 0
    if args.status:
        print(work_left_text(work_left(args.scale, store, device), device))
        print(f"\ntime per level:\n{training_times_text(args.scale, store)}")
        return 0
    if args.budget is None or args.budget <= 0:
        parser.error("give the time budget in seconds with --budget")
    started = time.monotonic() - _process_age()  # the budget counts Python's start and imports too
    try:
        written, status = (
            advance(
                args.scale,
                args.budget,
                store,
                args.results,
                args.data,
                device,
                args.dataset,
                started,
                args.precision,
            ),
            0,
        )
    except AdvanceFailed as failure:
        written, status = failure.written, 1
    print(f"{len(written)} new level files in {store}")
    if args.export is not None:
        note = {"scale": args.scale, "device": device_name(torch.device(device)), "torch": torch.__version__,
                "python": platform.python_version()}  # fmt: skip
        files = export(store, written, args.export, note)
        print(f"export: {len(files)} files in {args.export} ({sum(f.stat().st_size for f in files):,} bytes)")
    return status


@contextlib.contextmanager
def _alarm(at: float):
    """Raise OutOfTime in the main thread at monotonic time `at`, whatever it is doing
    (loading data, training); where there is no SIGALRM, only `run`'s own checks stop it."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def stop(signum, frame):
        raise OutOfTime("the budget ran out")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, at - time.monotonic()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere), so the budget counts the
    interpreter's start and torch's import too."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _duration(seconds: float) -> str:
    if seconds == 0:
        return "done"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


if __name__ == "__main__":
    sys.exit(main())
