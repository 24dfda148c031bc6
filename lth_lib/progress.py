"""Training progress: one bar per experiment, a widget in JupyterLab, plain text elsewhere.

The bar covers the training an experiment still needs (finished levels come from the
results store and are not counted), names the level being trained, and shows the
iterations done, the time left for the experiment and the latest test accuracy.

- In a kernel that a Jupyter server started (JupyterLab, Notebook: they set
  JPY_SESSION_NAME) with ipywidgets installed: tqdm's widget.
- Everywhere else (a terminal, papermill, nbval, `python -m lth_lib.regenerate`, whose
  terminal shows the kernels' output): a plain text bar on stdout, updated at most once
  a second, so nothing lands on stderr and stored notebooks carry no warning.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
from collections.abc import Callable

TEXT_INTERVAL = 1.0  # seconds between text updates (each one is a line in a notebook's output)


def widgets_wanted() -> bool:
    """Whether a widget bar will render: a Jupyter server's kernel with ipywidgets."""
    return "JPY_SESSION_NAME" in os.environ and importlib.util.find_spec("ipywidgets") is not None


class TrainingBar:
    """A progress bar over `total` iterations of training, job after job.

    `job(description, first)` starts the next job (its members may train in several
    chunks, each from iteration `first`) and returns the callback `train` calls at every
    evaluation point.
    """

    def __init__(self, title: str, total: int):
        if widgets_wanted():
            from tqdm.notebook import tqdm

            options: dict = {}
        else:
            from tqdm.std import tqdm

            # the terminal's size, also in a kernel whose output a terminal shows; where
            # there is none (a pipe, a pty of size 0, which would make tqdm print nothing):
            # 120x24
            size = shutil.get_terminal_size((120, 24))
            options = {
                "file": sys.stdout,
                "mininterval": TEXT_INTERVAL,
                "ncols": size.columns,
                "nrows": size.lines,
            }
        self.title = title
        # 12.3k/65.0k for long runs; whole numbers for short ones
        self.tqdm = tqdm(
            total=total, desc=title, unit="it", unit_scale=total >= 10_000, leave=True, **options
        )

    def job(self, description: str, first: int) -> Callable[[int, dict], None]:
        """Start a job named `description`; the progress callback for its training."""
        self.tqdm.set_description(f"{self.title} · {description}", refresh=False)
        last = first

        def update(iteration: int, metrics: dict) -> None:
            nonlocal last
            if iteration < last:  # the job's next chunk of members started over
                last = first
            self.tqdm.update(iteration - last)
            last = iteration
            accuracy = sum(metrics["test_acc"]) / len(metrics["test_acc"])
            if not math.isnan(accuracy):  # test metrics were computed at this point
                self.tqdm.set_postfix(test_acc=f"{accuracy:.4f}", refresh=False)

        return update

    def grow(self, iterations: int) -> None:
        """Count `iterations` more (another trial group of the run starts training)."""
        self.tqdm.total += iterations
        self.tqdm.refresh()

    def close(self) -> None:
        """Finish the bar (its last state stays visible)."""
        self.tqdm.close()
