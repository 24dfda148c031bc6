"""Regenerate every figure: run the notebooks through papermill at one scale.

    python -m lth_lib.regenerate                      # all notebooks; paper scale on a GPU, else cpu
    python -m lth_lib.regenerate --scale smoke        # seconds per notebook
    python -m lth_lib.regenerate lenet_mnist controls -p trials 3
    python -m lth_lib.regenerate --refresh            # re-store the notebooks' smoke outputs

Executed notebooks go to out/<scale>/ (git-ignored), figures to figures/ (PNG and SVG),
and, when every notebook ran, the wall time of each to figures/timings-<scale>.md.
Finished rounds come from the results store, so a second regeneration at the same scale
only re-plots.

`--refresh` re-executes the committed notebooks in place at `smoke` scale (the reference
outputs nbval compares against) in a fresh results store, and strips what changes from
run to run (execution timestamps, papermill metadata, the Python version).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_lib.data import DATA_ENV
from lth_lib.scales import SCALES, NotebookParameters, check_parameter_names, check_scale, default_scale
from lth_lib.store import RESULTS_ENV

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT / "notebooks"
# The order they run in: the later notebooks reuse the earlier ones' stored runs.
ORDER = ("lenet_mnist", "conv_cifar10", "oneshot_vs_iterative", "controls", "weight_travel")


@dataclass
class Outcome:
    """How one notebook's run went."""

    notebook: str
    seconds: float
    error: str | None = None


def notebook_names() -> list[str]:
    """Every notebook in notebooks/, in running order."""
    found = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def check_request(names: list[str], parameters: dict) -> None:
    """Fail before any work on an unknown notebook or parameter, or a bad value."""
    known = notebook_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; notebooks: {', '.join(known)}")
    check_parameter_names(parameters)
    NotebookParameters(**parameters)  # bad values raise here


def regenerate(names: list[str], scale: str, parameters: dict, out_dir: Path, figures_dir: Path) -> list[Outcome]:
    """Run `names` at `scale`, one after another; the outcome of each."""
    import papermill

    outcomes = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} at scale {scale} ...", flush=True)
        started = time.perf_counter()
        error = None
        try:
            papermill.execute_notebook(
                NOTEBOOKS / f"{name}.ipynb",
                out_dir / f"{name}.ipynb",
                parameters={"scale": scale, "figures_dir": str(figures_dir), **parameters},
                kernel_name="python3",
                cwd=str(NOTEBOOKS),
                progress_bar=True,
            )
        except Exception as failure:  # papermill raises its own error types; report and go on
            error = f"{type(failure).__name__}: {str(failure).strip().splitlines()[-1] if str(failure).strip() else ''}"
        outcome = Outcome(name, time.perf_counter() - started, error)
        status = "done" if error is None else f"FAILED ({error})"
        print(f"[{i}/{len(names)}] {name}: {status} in {_minutes(outcome.seconds)}", flush=True)
        outcomes.append(outcome)
    return outcomes


def clean_notebook(nb: dict) -> dict:
    """`nb` without run-to-run metadata: timings, papermill's records, versions."""
    nb.metadata.pop("papermill", None)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
    return nb


def refresh(names: list[str]) -> None:
    """Re-execute `names` in place at smoke scale and store their cleaned outputs."""
    import tempfile

    import nbclient
    import nbformat

    with tempfile.TemporaryDirectory() as results:
        os.environ.update(LTH_SCALE="smoke", LTH_RESULTS=results)
        for name in names:
            path = NOTEBOOKS / f"{name}.ipynb"
            started = time.perf_counter()
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                nb, timeout=600, kernel_name="python3", record_timing=False,
                resources={"metadata": {"path": str(NOTEBOOKS)}},
            )
            client.execute()
            nbformat.write(clean_notebook(nb), path)
            print(f"refreshed {name} in {_minutes(time.perf_counter() - started)}", flush=True)


def write_timings(outcomes: list[Outcome], scale: str, figures_dir: Path) -> Path:
    """figures/timings-<scale>.md: what ran, on what, and how long it took."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines = [
        f"# Regeneration at scale `{scale}`",
        "",
        f"Run on {datetime.date.today().isoformat()}, {device}, {platform.machine()} {platform.system()}, "
        f"Python {platform.python_version()}, PyTorch {torch.__version__}, {torch.get_num_threads()} threads.",
        "Times include training, or reusing stored rounds where an earlier notebook made them.",
        "",
        "| notebook | wall time | status |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {o.notebook} | {_minutes(o.seconds)} | {'ok' if o.error is None else o.error} |" for o in outcomes]
    lines.append(f"| **total** | {_minutes(sum(o.seconds for o in outcomes))} | |")
    path = figures_dir / f"timings-{scale}.md"
    figures_dir.mkdir(parents=True, exist_ok=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lth_lib.regenerate", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help=f"which to run (default: all of {', '.join(notebook_names())})")
    parser.add_argument("--scale", help=f"one of {', '.join(SCALES)} (default: paper with a GPU, else cpu)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter for every notebook, e.g. -p trials 3")
    parser.add_argument("--out", type=Path, default=None, help="executed notebooks (default: out/<scale>)")
    parser.add_argument("--figures", type=Path, default=PROJECT / "figures", help="figures folder (default: figures/)")
    parser.add_argument("--refresh", action="store_true",
                        help="re-store the notebooks' reference outputs (smoke scale, in place) and exit")
    args = parser.parse_args(argv)
    for variable in (DATA_ENV, RESULTS_ENV):  # kernels run in notebooks/: pass them absolute paths
        if os.environ.get(variable):
            os.environ[variable] = str(Path(os.environ[variable]).resolve())
    if args.refresh:
        names = args.notebooks or notebook_names()
        check_request(names, {})
        refresh(names)
        return 0

    parameters = {name: _value(value) for name, value in args.parameter}
    scale = args.scale
    if scale is None:
        scale = default_scale()
        print(f"no --scale given: using {scale!r} ({'a GPU is present' if scale == 'paper' else 'no GPU found'})")
    try:
        check_scale(scale)
        names = args.notebooks or notebook_names()
        check_request(names, {"scale": scale, **parameters})
    except ValueError as error:
        parser.error(str(error))
    if "scale" in parameters or "figures_dir" in parameters:
        parser.error("give the scale with --scale and the figures folder with --figures")
    out_dir = args.out or PROJECT / "out" / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = args.figures.resolve()

    outcomes = regenerate(names, scale, parameters, out_dir, figures_dir)
    if set(names) == set(notebook_names()):
        written = f"written to {write_timings(outcomes, scale, figures_dir).name}"
    else:  # a subset's times would replace the whole run's
        written = f"a subset: timings-{scale}.md left as it was"
    print(f"\nSummary (scale {scale}; executed notebooks in {out_dir}, figures in {figures_dir}):")
    for o in outcomes:
        print(f"  {o.notebook:<24}{_minutes(o.seconds):>10}  {'ok' if o.error is None else 'FAILED: ' + o.error}")
    print(f"  {'total':<24}{_minutes(sum(o.seconds for o in outcomes)):>10}   ({written})")
    failed = [o.notebook for o in outcomes if o.error is not None]
    if failed:
        print(f"failed: {', '.join(failed)} (see {out_dir} for the executed notebooks)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
