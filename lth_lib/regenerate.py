"""Regenerate every figure: run the notebooks through papermill at one scale.

    python -m lth_lib.regenerate                      # all notebooks; paper scale on a GPU, else cpu
    python -m lth_lib.regenerate --scale smoke        # seconds per notebook
    python -m lth_lib.regenerate lenet_mnist controls -p trials 3
    python -m lth_lib.regenerate --refresh            # re-store the notebooks' smoke outputs
    python -m lth_lib.regenerate --executor local --jobs 2       # train as 2 local processes first
    python -m lth_lib.regenerate --executor slurm --partition gpu --gpus-per-job 1 --jobs 10 --time 240

The terminal shows each notebook's output as it runs: its tables, and one progress bar
per experiment with the level being trained and the time left. Executed notebooks go to
out/<run>/ (git-ignored; <run> is the scale and any -p overrides, e.g. cpu-trials-3).
Figures go to figures/ only from a full regeneration at a committed scale (`cpu`;
`paper` into figures/paper/) with no overrides, which also writes the wall time of each
notebook to figures/timings-<scale>.md; any other run writes its figures to
out/<run>/figures/, and --figures DIR puts them elsewhere. Beside the figures, in
notebooks/, each executed notebook is kept for readers (`keep_notebook`: no run
metadata, timings or absolute paths, its saved figures linked rather than embedded), so
the committed ones show the committed run; after a full regeneration there, the README's
figure sections are regenerated from the notebooks' readings (`lth_lib.readings`).
Finished rounds come from the results store, so a second regeneration at the same
scale only re-plots.

With `--executor`, the experiments the notebooks draw are first trained as jobs, each a
share of their trial groups (`lth_lib.cluster`), into the results store; the notebooks
then draw from it. `--no-wait` (SLURM) returns once the jobs are submitted; `--collect
FOLDER` later waits for them and draws. A request the jobs could not carry out (a
partition or time limit the cluster refuses, a results root this machine cannot write)
stops with exit code 2 before any job is submitted. Ctrl-C or SIGTERM stops the command
with exit code 128 + the signal, after cancelling the jobs it submitted; every level they
finished stays stored, and the same command resumes.

`--refresh` re-executes the committed notebooks in place at `smoke` scale (the reference
outputs nbval compares against) in a fresh results store, and strips what changes from
run to run (execution timestamps, papermill metadata, the Python version).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_lib.cluster import EXECUTORS, Options
from lth_lib.notebook import COMMITTED_FIGURES, NOTEBOOKS, SAVED_AS, NotebookParameters, stored_versions
from lth_lib.paths import PROJECT
from lth_lib.protocol import SCALES, Experiment, check_scale, default_scale
from lth_lib.train import default_device, device_name

NOTEBOOK_DIR = (PROJECT or Path.cwd()) / "notebooks"


@dataclass
class Outcome:
    """How one notebook's run went."""

    notebook: str
    seconds: float
    error: str | None = None


def notebook_names() -> list[str]:
    """Every notebook in notebooks/, in running order (`notebook.NOTEBOOKS`' order: the later
    notebooks reuse the earlier ones' stored runs)."""
    found = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    return [n for n in NOTEBOOKS if n in found] + sorted(found - set(NOTEBOOKS))


def main_job() -> list[str]:
    """The notebooks a run without names regenerates: all but those `NOTEBOOKS` keeps out
    of the main job (`Draws.main_job`), which run when named."""
    return [n for n in notebook_names() if n not in NOTEBOOKS or NOTEBOOKS[n].main_job]


def full_run(names: list[str]) -> bool:
    """Whether `names` regenerate a committed set of figures: the whole main job, or only
    notebooks kept out of it (each of which is then its own committed run)."""
    return set(names) >= set(main_job()) or not set(names) & set(main_job())


def check_request(names: list[str], parameters: dict) -> None:
    """Fail before any work on an unknown notebook or parameter, or a bad value."""
    known = notebook_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; notebooks: {', '.join(known)}")
    for name in names:
        NotebookParameters.of(
            parameters, name if name in NOTEBOOKS else None
        )  # bad names and values raise here


def run_name(scale: str, parameters: dict) -> str:
    """The folder name of a run under out/: the scale, then each override, e.g. cpu-trials-3."""
    parts = [scale] + [f"{name}-{value}" for name, value in sorted(parameters.items())]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def committed_figures_dir(scale: str) -> Path | None:
    """Where `scale`'s figures are committed (figures/, figures/paper/); None for a scale
    whose figures are not."""
    return NOTEBOOK_DIR.parent / COMMITTED_FIGURES[scale] if scale in COMMITTED_FIGURES else None


def default_figures_dir(names: list[str], scale: str, parameters: dict, out_dir: Path) -> Path:
    """The committed figures' folder (`committed_figures_dir`) for a full regeneration
    (`full_run`) at a committed scale with no overrides; out_dir/figures for any other
    run, so it never replaces those."""
    committed = committed_figures_dir(scale)
    if full_run(names) and committed is not None and not parameters:
        return committed
    return out_dir / "figures"


def drawn_experiments(params: NotebookParameters) -> list[Experiment]:
    """Every experiment the notebook of `params` draws with them."""
    return [exp for drawn in params.experiments().values() for exp in drawn.values()]


def drawable(names: list[str], scale: str) -> dict[str, list[str]]:
    """For a run that must not train: per notebook, the networks whose experiments the
    committed portable store holds a pruned level of, the dense level and at least one
    round, itself or in its first pass (`notebook.stored_versions`; notebooks with none
    are left out)."""
    from lth_lib.advance import levels_stored
    from lth_lib.portable import portable_store

    def pruned(exp: Experiment) -> bool:
        return any(levels_stored(version, store) > 1 for version in stored_versions(exp))

    store, plan = portable_store(scale), {}
    for name in names:
        drawn = NotebookParameters(name, scale).experiments()
        networks = [network for network, experiments in drawn.items()
                    if store is not None and all(map(pruned, experiments.values()))]  # fmt: skip
        if networks:
            plan[name] = networks
    return plan


def nothing_stored_text(scale: str) -> str:
    """Why a run that must not train draws nothing, and what training would take here."""
    from lth_lib.advance import work_left, work_left_text
    from lth_lib.portable import portable_store

    return (
        f"No {scale}-scale results are stored in {portable_store(scale)}, and without a GPU this "
        f"command draws {scale}-scale figures from them rather than train for hours. Training them on this "
        f"machine would take at least (measured training steps and evaluation):\n\n"
        f"{work_left_text(work_left(scale, portable_store(scale), 'cpu'), 'cpu')}\n\n"
        f"Train them on a GPU instead: `python -m lth_lib.advance --scale {scale} --budget SECONDS`, or "
        f"scripts/device-job in short GPU slots, then `python -m lth_lib.advance --import DIR` and commit "
        f"figures/data/{scale}/. Or train here anyway with --train."
    )


def kernel_options() -> dict:
    """Options for nbclient/papermill kernels: on POSIX, IPC sockets (at an absolute path,
    since the kernel runs in notebooks/) instead of local TCP, so no kernel warns that it
    runs over TCP without encryption."""
    if os.name != "posix":
        return {}
    import tempfile
    import uuid

    from traitlets.config import Config

    sockets = Path(tempfile.gettempdir()) / f"lth-kernel-{uuid.uuid4().hex[:12]}"
    return {"config": Config({"KernelManager": {"transport": "ipc", "ip": str(sockets)}})}


def regenerate(names: list[str], scale: str, parameters: dict[str, dict], out_dir: Path, figures_dir: Path
               ) -> list[Outcome]:  # fmt: skip
    """Run `names` at `scale` (each with its `parameters`), one after another, showing their
    output; the outcome of each."""
    import papermill

    os.environ.pop(
        "JPY_SESSION_NAME", None
    )  # text progress bars in the kernels, even if started from JupyterLab
    outcomes = []
    for i, name in enumerate(names, 1):
        print(f"\n[{i}/{len(names)}] {name} at scale {scale}", flush=True)
        started = time.perf_counter()
        error = None
        try:
            papermill.execute_notebook(
                NOTEBOOK_DIR / f"{name}.ipynb",
                out_dir / f"{name}.ipynb",
                parameters={"scale": scale, "figures_dir": str(figures_dir), **parameters[name]},
                kernel_name="python3",
                cwd=str(NOTEBOOK_DIR),
                progress_bar=False,
                stdout_file=sys.stdout,  # the notebook's tables and progress bars, as they come
                stderr_file=sys.stderr,
                **kernel_options(),
            )
        except Exception as failure:  # noqa: BLE001 (papermill raises its own error types; report and go on)
            error = f"{type(failure).__name__}: {str(failure).strip().splitlines()[-1] if str(failure).strip() else ''}"
        if error is None:
            keep_notebook(out_dir / f"{name}.ipynb", figures_dir / "notebooks" / f"{name}.ipynb")
        outcome = Outcome(name, time.perf_counter() - started, error)
        status = "done" if error is None else f"FAILED ({error})"
        print(f"[{i}/{len(names)}] {name}: {status} in {_minutes(outcome.seconds)}", flush=True)
        outcomes.append(outcome)
    return outcomes


# kept notebooks' id for papermill's injected-parameters cell (papermill gives it a random one)
INJECTED_ID = "injected-parameters"


def clean_notebook(nb: dict) -> dict:
    """`nb` without run-to-run metadata: timings, papermill's records, versions, and the random
    id papermill gives its injected-parameters cell."""
    nb.metadata.pop("papermill", None)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if "id" in cell and INJECTED_ID in cell.metadata.get("tags", []):
            cell.id = INJECTED_ID
    return nb


def keep_notebook(executed: Path, kept: Path) -> None:
    """Write `executed` to `kept` as a reader should see it: `clean_notebook`, the project's
    folder left out of paths, each progress bar as its last state without timings, and each
    figure the run saved in the figures folder (kept's folder's parent) linked, not embedded."""
    import nbformat

    nb = clean_notebook(nbformat.read(executed, as_version=4))
    _link_saved_figures(nb)
    for cell in nb.cells:
        cell.source = _readable(cell.source)
        merged = []  # a progress bar comes as one stream output per redraw: join them, as a terminal would
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                previous
                and output.output_type == previous.output_type == "stream"
                and output.name == previous.name
            ):
                previous.text += output.text
            else:
                merged.append(output)
        for output in merged:
            if "text" in output:
                output.text = _readable(output.text)
            if "text/plain" in output.get("data", {}):
                output.data["text/plain"] = _readable(output.data["text/plain"])
        if "outputs" in cell:
            cell.outputs = merged
    kept.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, kept)


def _link_saved_figures(nb: dict) -> None:
    """Replace each figure output of `nb` that shows a saved file (tagged `SAVED_AS` by
    `NotebookParameters.save`) by a Markdown link to that file, beside the kept notebook's
    folder: figures/notebooks/x.ipynb links ../name.png."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            saved = output.get("metadata", {}).get(SAVED_AS)
            if saved:
                plain = output.data.get("text/plain", saved)
                output.data = {"text/markdown": f"![{Path(saved).stem}](../{saved})", "text/plain": plain}
                output.metadata = {}


def _readable(text: str) -> str:
    """`text` without the project's folder, carriage-return redraws or tqdm's timings."""
    project = NOTEBOOK_DIR.parent
    text = text.replace(f"{project}{os.sep}", "").replace(str(project), ".")
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return re.sub(r" ?\[[0-9:]+<[^\]]*\]", "", text)


def refresh(names: list[str]) -> None:
    """Re-execute `names` in place at smoke scale and store their cleaned outputs."""
    import tempfile

    import nbclient
    import nbformat

    with tempfile.TemporaryDirectory() as results:
        os.environ.update(LTH_SCALE="smoke", LTH_RESULTS=results)
        for name in names:
            path = NOTEBOOK_DIR / f"{name}.ipynb"
            started = time.perf_counter()
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                nb,
                timeout=600,
                kernel_name="python3",
                record_timing=False,
                resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                **kernel_options(),
            )
            client.execute()
            nbformat.write(clean_notebook(nb), path)
            print(f"refreshed {name} in {_minutes(time.perf_counter() - started)}", flush=True)


def timings_name(ran: set[str], scale: str) -> str | None:
    """The timings file of a run of the notebooks `ran`: timings-<scale>.md for the main
    job, timings-<scale>-<notebooks>.md for notebooks kept out of it; None for a subset."""
    ran = ran & set(notebook_names())
    if ran >= set(main_job()):
        return f"timings-{scale}.md"
    if ran and not ran & set(main_job()):
        return f"timings-{scale}-{'-'.join(sorted(ran))}.md"
    return None


def write_timings(outcomes: list[Outcome], scale: str, path: Path) -> Path:
    """A timings file (`timings_name`): what ran, on what, and how long it took."""
    device = device_name(default_device())
    lines = [
        f"# Regeneration at scale `{scale}`",
        "",
        (
            f"Run on {datetime.date.today().isoformat()}, {device}, {platform.machine()} {platform.system()}, "
            f"Python {platform.python_version()}, PyTorch {torch.__version__}, {torch.get_num_threads()} threads."
        ),
        "Times include training, or reusing stored rounds where an earlier notebook made them.",
        "",
        "| notebook | wall time | status |",
        "| --- | ---: | --- |",
    ]
    lines += [
        f"| {o.notebook} | {_minutes(o.seconds)} | {'ok' if o.error is None else o.error} |" for o in outcomes
    ]
    lines.append(f"| **total** | {_minutes(sum(o.seconds for o in outcomes))} | |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def _value(text: str):
    """A -p value as papermill's CLI reads it: bool, None, int, float, else string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


RESUME = "every level the jobs finished is stored: run the same command again to resume"


class Stopped(KeyboardInterrupt):
    """The command was told to stop: Ctrl-C (SIGINT) or SIGTERM, as `signum`."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame) -> None:
    raise Stopped(signum)


def train_on_cluster(names: list[str], scale: str, parameters: dict[str, dict], options, no_wait: bool,
                     collect_from: Path | None) -> int | None:  # fmt: skip
    """Train what `names` draw as `options`' jobs, or wait for the jobs recorded in
    `collect_from`; an exit code to stop with, or None once every job has finished.
    Stopped (Ctrl-C, SIGTERM) while it waits, it cancels the jobs it submitted."""
    from lth_lib import cluster
    from lth_lib.data import DATA_ENV
    from lth_lib.paths import env_path
    from lth_lib.portable import committed_store
    from lth_lib.store import results_root

    if collect_from is not None:
        jobs = cluster.collect(collect_from)
        print(f"waiting for the {len(jobs)} jobs recorded in {collect_from}", flush=True)
    else:
        params = {name: NotebookParameters.of({"scale": scale, **parameters[name]}, name) for name in names}
        experiments = [e for name in names for e in drawn_experiments(params[name])]
        work = cluster.units(experiments, options.device, options.split_trials)
        first = params[names[0]]
        data = first.data_root or (str(env_path(DATA_ENV)) if env_path(DATA_ENV) else None)
        results = str(results_root(first.results_root).resolve())
        committed = committed_store(scale)  # as NotebookParameters.run draws
        try:
            jobs = cluster.submit(
                work, options, data, results, str(committed) if committed is not None else None
            )
        except ValueError as refused:
            print(f"nothing submitted: {refused}", file=sys.stderr)
            return 2
        print(f"{len(work)} trial groups of {len({u.experiment.identity() for u in work})} experiments as "
              f"{len(jobs)} {options.executor} jobs ({options.threads} thread{'s' if options.threads > 1 else ''} "
              f"each{f', {options.gpus_per_job} GPU' if options.gpus_per_job else ''}), into {results}; "
              f"job files and logs in {options.folder}", flush=True)  # fmt: skip
        for job, units in zip(jobs, json.loads((options.folder / "jobs.json").read_text())["jobs"]):
            print(f"  job {job.job_id}: {'; '.join(units['units'])}", flush=True)
        if no_wait:
            print(
                f"submitted; to wait for them and draw the figures later: "
                f"python -m lth_lib.regenerate --collect {options.folder} (with this command's other options)"
            )
            return 0
    try:
        failures = cluster.wait(jobs)
    except Stopped as stop:
        if collect_from is not None:
            print(f"stopped waiting; the jobs run on (scancel {' '.join(j.job_id for j in jobs)} ends them)",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"stopped ({stop}): cancelling the {len(jobs)} jobs", file=sys.stderr, flush=True)
            for line in cluster.cancel(jobs):
                print(f"  {line}", file=sys.stderr)
            print(RESUME, file=sys.stderr)
        return 128 + stop.signum
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        print(RESUME, file=sys.stderr)
        return 1
    print("every job has finished", flush=True)
    return None


def parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lth_lib.regenerate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        help=f"which to run (default: the main job, {', '.join(main_job())}; also: "
        f"{', '.join(sorted(set(notebook_names()) - set(main_job())))})",
    )
    parser.add_argument(
        "--scale", help=f"one of {', '.join(SCALES)} (default: $LTH_SCALE, else paper with a GPU, else cpu)"
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter for every notebook, e.g. -p trials 3 or -p conv_rate 0.2 "
        "(any field of an experiment: lth_lib.notebook.parameter_names())",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="executed notebooks (default: out/<run>, e.g. out/smoke or out/cpu-trials-3)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="figures folder (default: for a full regeneration with no -p overrides at a "
        f"committed scale, {', '.join(f'{k}: {v}/' for k, v in COMMITTED_FIGURES.items())}; "
        "else <out>/figures)",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="train what is missing even at paper scale without a GPU (hours to days)",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="re-store the notebooks' reference outputs (smoke scale, in place) and exit",
    )
    cluster = parser.add_argument_group("training as jobs first (lth_lib.cluster; needs .[cluster])")
    cluster.add_argument(
        "--executor", choices=EXECUTORS, help="local: processes on this machine; slurm: SLURM jobs"
    )
    cluster.add_argument("--jobs", type=int, help="how many jobs the trials are dealt to (default 2)")
    cluster.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    cluster.add_argument(
        "--gpus-per-job", type=int, help="GPUs per job (default 0: CPUs); local jobs each see their own"
    )
    cluster.add_argument(
        "--split-trials",
        action="store_true",
        help="one trial per job unit, so that one experiment's trials spread over several jobs "
        "(on a GPU a whole experiment is otherwise one unit; numbers differ in the last bits)",
    )
    cluster.add_argument(
        "--cpus-per-job",
        type=int,
        help="threads (SLURM: cores) per job; default: locally as many as one process here uses, "
        "which keeps a serial run's numbers (fewer is faster where jobs share cores, and "
        "changes Conv's float rounding), on SLURM 1",
    )
    cluster.add_argument(
        "--time",
        type=int,
        dest="time_min",
        metavar="MINUTES",
        help="each job's time limit; a job past it is requeued and resumes (default 1440)",
    )
    cluster.add_argument("--no-wait", action="store_true", help="SLURM: return once the jobs are submitted")
    cluster.add_argument(
        "--collect",
        type=Path,
        metavar="FOLDER",
        help="wait for the jobs a --no-wait submission recorded in FOLDER, then draw",
    )
    return parser


def cluster_options(args: argparse.Namespace) -> Options | None:
    """The jobs' options the command line gives (None: no jobs); ValueError for a bad mix."""
    given = {
        name: getattr(args, name)
        for name in ("jobs", "partition", "gpus_per_job", "cpus_per_job", "time_min")
    }
    given = {name: value for name, value in given.items() if value is not None}
    if args.split_trials:
        given["split_trials"] = True
    if args.executor is None:
        if given or args.no_wait:
            raise ValueError(
                "--jobs, --partition, --gpus-per-job, --cpus-per-job, --time, --split-trials and --no-wait "
                "need --executor"
            )
        return None
    if args.collect is not None:
        raise ValueError("--collect waits for jobs submitted earlier: give it without --executor")
    if args.no_wait and args.executor != "slurm":
        raise ValueError(
            "--no-wait needs --executor slurm: local jobs end with the command that started them"
        )
    return Options(args.executor, **given)


def drawing_only(names: list[str], scale: str, per_notebook: dict[str, dict]) -> list[str] | None:
    """For a run that must not train (paper scale without a GPU): the notebooks that have
    stored results to draw, each limited to the networks they cover unless `networks` is
    given (in `per_notebook`); None, after saying why, where there is nothing to draw."""
    plan = drawable(names, scale)
    if not plan:
        print(nothing_stored_text(scale), file=sys.stderr)
        return None
    for name in names:
        if name not in plan:
            print(
                f"{name}: skipped, no {scale}-scale results of {', '.join(NOTEBOOKS[name].networks)} are stored"
            )
        elif "networks" not in per_notebook[name] and plan[name] != list(NOTEBOOKS[name].networks):
            per_notebook[name]["networks"] = ",".join(plan[name])  # what the committed results cover
    return [name for name in names if name in plan]


def main(argv: list[str] | None = None) -> int:
    """The command line. Ctrl-C or SIGTERM stops it (`Stopped`; jobs it submitted are
    cancelled) with exit code 128 + the signal's number."""
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _main(argv)
    except Stopped as stop:
        print(f"stopped ({stop})", file=sys.stderr)
        return 128 + stop.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None) -> int:
    command = parser()
    args = command.parse_args(argv)
    if args.refresh:
        names = args.notebooks or notebook_names()
        check_request(names, {})
        refresh(names)
        return 0
    parameters = {name: _value(value) for name, value in args.parameter}
    scale = args.scale
    if scale is None:
        scale = default_scale()
        print(
            f"no --scale given: using {scale!r} (the default scale: $LTH_SCALE, else paper with a GPU, else cpu)"
        )
    names = args.notebooks or main_job()
    if {"scale", "figures_dir", "train"} & set(parameters):
        command.error("give the scale with --scale, the figures folder with --figures, training with --train")
    try:
        check_scale(scale)
        check_request(names, {"scale": scale, **parameters})
        options = cluster_options(args)
    except (ValueError, TypeError) as error:
        command.error(str(error))
    out_dir = (args.out or NOTEBOOK_DIR.parent / "out" / run_name(scale, parameters)).resolve()
    figures_dir = (args.figures or default_figures_dir(names, scale, parameters, out_dir)).resolve()
    per_notebook = {name: {**parameters, **({"train": True} if args.train else {})} for name in names}
    before = stored_files(parameters)
    jobs = []  # the training jobs' outcome, when they run first
    if options is not None or args.collect is not None:
        if options is not None:
            options = dataclasses.replace(options, folder=out_dir / "jobs")
        started = time.perf_counter()
        stop = train_on_cluster(names, scale, per_notebook, options, args.no_wait, args.collect)
        if stop is not None:
            return stop
        what = f"{options.jobs} {options.executor} jobs" if options is not None else f"jobs of {args.collect}"
        jobs = [Outcome(f"training: {what}", time.perf_counter() - started)]
    elif (
        not args.train and not NotebookParameters(scale=scale).training
    ):  # draw from the committed results only
        names = drawing_only(names, scale, per_notebook)
        if names is None:
            return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"figures go to {figures_dir}, executed notebooks to {out_dir}", flush=True)
    outcomes = jobs + regenerate(names, scale, per_notebook, out_dir, figures_dir)
    code = summarise(outcomes, scale, out_dir, figures_dir, trained=stored_files(parameters) != before)
    drawn, committed = {o.notebook for o in outcomes if o.error is None}, committed_figures_dir(scale)
    if code == 0 and set(names) <= drawn and committed is not None and figures_dir == committed.resolve():
        from lth_lib.readings import refresh_readme

        refresh_readme()
        print("README.md: its figure sections regenerated from the new readings (cog)", flush=True)
    return code


def stored_files(parameters: dict) -> set[Path]:
    """Every level and stability file in the results store the notebooks use: a run that
    leaves this set as it was trained nothing."""
    from lth_lib.store import results_root

    root = results_root(parameters.get("results_root"))
    return {p for pattern in ("**/level_*.json", "**/stability/*.json") for p in root.glob(pattern)}


def summarise(
    outcomes: list[Outcome], scale: str, out_dir: Path, figures_dir: Path, trained: bool = True
) -> int:
    """Print how each notebook went, write the timings of a full regeneration that trained
    something (a redraw's would replace the training run's); the exit code."""
    name = timings_name({o.notebook for o in outcomes}, scale)
    if name is None:  # a subset's would replace the run's
        written = f"a subset: timings-{scale}.md left as it was"
    elif not trained:
        written = f"nothing trained: {name} left as it was"
    else:
        written = f"written to {write_timings(outcomes, scale, figures_dir / name).name}"
    print(f"\nSummary (scale {scale}; executed notebooks in {out_dir}, figures in {figures_dir}):")
    for o in outcomes:
        print(
            f"  {o.notebook:<24}{_minutes(o.seconds):>10}  {'ok' if o.error is None else 'FAILED: ' + o.error}"
        )
    print(f"  {'total':<24}{_minutes(sum(o.seconds for o in outcomes)):>10}   ({written})")
    failed = [o.notebook for o in outcomes if o.error is not None]
    if failed:
        print(f"failed: {', '.join(failed)} (see {out_dir} for the executed notebooks)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
