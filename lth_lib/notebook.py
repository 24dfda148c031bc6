"""Notebook glue: the parameters every notebook takes, validated before any work starts.

A notebook's `parameters` cell sets some of `NotebookParameters`' fields (papermill
injects others); `notebook_parameters(globals())` reads them, rejecting unknown names
(papermill only warns about them) and bad values. `NotebookParameters` turns them into
the experiments (`lth_lib.protocol`) and runs (`lth_lib.lottery.run`) the notebooks draw.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_lib.data import Dataset, load_dataset
from lth_lib.paths import project_path
from lth_lib.protocol import (
    DROPOUT,
    PAPER,
    Experiment,
    architecture,
    check_scale,
    default_rewind_iterations,
    default_scale,
    iterative_experiment,
    oneshot_experiment,
    scaled_experiment,
)

# Scales whose figures are committed, and where: only a full regeneration at one of them,
# with no parameter overrides, writes there (`python -m lth_lib.regenerate`).
COMMITTED_FIGURES = {"cpu": "figures", "paper": "figures/paper"}


@dataclass(frozen=True)
class NotebookParameters:
    """Every parameter a notebook may take (each notebook's `parameters` cell sets some).

    None means "the scale's value".
    """

    scale: str | None = None  # smoke, cpu or paper (None: `protocol.default_scale()`)
    networks: str = ""  # comma-separated networks, e.g. "conv2,conv4" ("": the notebook's own)
    iterations: int | None = None
    rounds: int | None = None
    trials: int | None = None
    control_trials: int | None = None
    seed: int = 0
    # Folders; a relative one is taken from the project root, like LTH_DATA and LTH_RESULTS.
    data_root: str | None = None  # None: LTH_DATA, else torchvision's download
    results_root: str | None = None  # None: LTH_RESULTS, else results/ in the project
    figures_dir: str | None = None  # where to save the figures (None: only show them)
    train: bool | None = None  # None: train what is missing, except at paper scale without a GPU
    ticket_percent: float = 21.1  # weight travel, stability: the ticket nearest this percent remaining
    rewind_iterations: str = ""  # comma-separated iterations k to rewind to ("": the scale's)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", default_scale() if self.scale is None else check_scale(self.scale))
        for name in ("data_root", "results_root", "figures_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(project_path(getattr(self, name))))
        for network in self.network_list:
            if network not in PAPER:
                raise ValueError(f"unknown network {network!r}; known: {', '.join(PAPER)}")
        for name in ("iterations", "rounds", "trials", "control_trials"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not all(k.strip().isdigit() for k in self.rewind_iterations.split(",") if k.strip()):
            raise ValueError(f"rewind_iterations must be comma-separated iterations, got {self.rewind_iterations!r}")
        if self.train is not None and not isinstance(self.train, bool):
            raise ValueError(f"train must be True, False or None, got {self.train!r}")

    @property
    def network_list(self) -> list[str]:
        """`networks` as a list."""
        return [n.strip() for n in self.networks.split(",") if n.strip()]

    def experiment(self, network: str, make=scaled_experiment, **overrides) -> Experiment:
        """`network`'s experiment at this scale (`make`: a `protocol` function of network and
        scale), with `overrides` and this notebook's parameters, which win."""
        mine = {n: getattr(self, n) for n in ("iterations", "rounds", "trials", "control_trials")}
        mine = {n: v for n, v in mine.items() if v is not None}
        return make(network, self.scale, **{"seed": self.seed, **overrides, **mine})

    def iterative(self, network: str, **overrides) -> Experiment:
        """Iterative pruning with both of the paper's controls: what the notebooks draw."""
        return self.experiment(network, iterative_experiment, **overrides)

    def oneshot(self, network: str) -> Experiment:
        """The one-shot sweep at the same per-layer sizes, tickets only."""
        return self.experiment(network, oneshot_experiment)

    def dropout(self, network: str) -> Experiment:
        """The dropout figure's experiment: iterative pruning with dropout, beside random
        reinitialisation."""
        return self.experiment(network, dropout=DROPOUT, controls=("reinit",))

    def rewinding(self, network: str) -> dict[int, Experiment]:
        """Iterative pruning with tickets rewound to each iteration k of `rewind_iterations`
        (else the protocol's at this scale), tickets only; by k."""
        given = [int(k) for k in self.rewind_iterations.split(",") if k.strip()]
        ks = given or default_rewind_iterations(network, self.scale)
        return {k: self.experiment(network, rewind_iteration=k) for k in ks}

    def data(self, network: str, device: str | None = None) -> Dataset:
        """`network`'s data set from this notebook's data_root, on `device` (None: where
        `run` trains, a GPU if there is one)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return load_dataset(architecture(network).dataset, self.data_root, device)

    @property
    def training(self) -> bool:
        """Whether `run` may train: `train`, else yes except at paper scale without a GPU
        (there the notebooks draw what the committed store, figures/data/paper/, holds)."""
        return self.train if self.train is not None else self.scale != "paper" or torch.cuda.is_available()

    def run(self, experiment: Experiment, data=None):
        """`lth.run` as the notebooks call it: this notebook's folders, the committed portable
        store of this scale (figures/data/paper/ at paper scale) before the results store,
        training only where `training` allows, progress bars except at smoke scale."""
        from lth_lib.lottery import run
        from lth_lib.portable import COMMITTED_SCALES, portable_store

        store = portable_store(self.scale) if self.scale in COMMITTED_SCALES else None
        return run(
            experiment, data, data_root=self.data_root, results_root=self.results_root,
            portable=store if store is not None and store.is_dir() else None,
            train=self.training, progress=self.scale != "smoke",
        )  # fmt: skip

    def save(self, fig, name: str) -> None:
        """Save `fig` as figures_dir/name.{png,svg} when figures_dir is set."""
        if self.figures_dir is not None:
            from lth_lib.plots import save_figure

            save_figure(fig, Path(self.figures_dir) / name)


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_parameter_names(names) -> None:
    """A clear error naming every parameter in `names` that NotebookParameters lacks."""
    fields = {f.name for f in dataclasses.fields(NotebookParameters)}
    unknown = sorted(set(names) - fields)
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
            f"parameters are: {', '.join(sorted(fields))}"
        )


def notebook_parameters(namespace: dict) -> NotebookParameters:
    """The notebook's parameters from its globals, after papermill's injection.

    Every public plain value (str, int, float, bool, None) in `namespace` must be a
    parameter: a misspelt `-p trails 3` is an error naming the known parameters.
    """
    values = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _IPYTHON_NAMES
        and not isinstance(value, types.ModuleType)
        and (value is None or isinstance(value, (str, int, float, bool)))
    }
    check_parameter_names(values)
    return NotebookParameters(**values)
