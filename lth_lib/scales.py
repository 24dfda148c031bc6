"""The scales every notebook runs at, in one place, and the notebooks' parameters.

- `smoke`: seconds per notebook; for tests and nbval.
- `cpu`: the README's default; every notebook together in about an hour on 2 cores.
  The paper's protocol (networks, optimiser, learning rate, batch 60, pruning rates,
  rewinding to theta_0, controls) with fewer iterations (LeNet 5K of 50K; Conv 300/200
  of 20K-30K), rounds (LeNet 12, to 7%; Conv-2/4/6 3/2/1) and trials (2 LeNet, 1 Conv; 1 control
  network per ticket), and validation/test metrics on random subsets (2,000 examples of
  each for LeNet, 500 for Conv) instead of all 5,000/10,000.
- `paper`: the protocol of PAPER.md (5 trials, 3 random reinits per ticket, full
  iterations, every 100 iterations on the full validation and test sets); for a GPU.

A notebook reads its parameters with `notebook_parameters(globals())`, which rejects
unknown names (papermill only warns about them) and bad values before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_lib.lottery import Experiment, paper_experiment
from lth_lib.models import ARCHITECTURES
from lth_lib.paths import project_path

SCALES = ("smoke", "cpu", "paper")
# Scales whose figures are committed, and where: only a full regeneration at one of them,
# with no parameter overrides, writes there (`python -m lth_lib.regenerate`).
COMMITTED_FIGURES = {"cpu": "figures", "paper": "figures/paper"}

CONTROLS = ("reinit", "random_prune")  # the controls every iterative experiment trains beside its tickets

# Per scale and network: the overrides of the paper's protocol (`paper_experiment`).
SCALE_OVERRIDES: dict[str, dict[str, dict]] = {
    "smoke": {
        "lenet300": dict(iterations=60, eval_every=20, eval_examples=500, rounds=2, trials=1),
        "conv2": dict(iterations=4, eval_every=2, eval_examples=60, rounds=1, trials=1),
        "conv4": dict(iterations=4, eval_every=2, eval_examples=60, rounds=1, trials=1),
        "conv6": dict(iterations=4, eval_every=2, eval_examples=60, rounds=1, trials=1),
    },
    "cpu": {
        "lenet300": dict(iterations=5000, eval_every=100, eval_examples=2000, rounds=12, trials=2),
        "conv2": dict(iterations=300, eval_every=50, eval_examples=500, rounds=3, trials=1),
        "conv4": dict(iterations=200, eval_every=50, eval_examples=500, rounds=2, trials=1),
        "conv6": dict(iterations=200, eval_every=50, eval_examples=500, rounds=1, trials=1),
    },
    "paper": {
        "lenet300": dict(rounds=20, trials=5, control_trials=3),
        "conv2": dict(rounds=20, trials=5, control_trials=3),
        "conv4": dict(rounds=20, trials=5, control_trials=3),
        "conv6": dict(rounds=20, trials=5, control_trials=3),
    },
}


def check_scale(scale: str) -> str:
    """`scale` if it is known, else a clear error listing the scales."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return scale


def default_scale() -> str:
    """`paper` where a GPU is present, `cpu` otherwise."""
    return "paper" if torch.cuda.is_available() else "cpu"


def scaled_experiment(network: str, scale: str, **overrides) -> Experiment:
    """The paper's experiment for `network`, cut down to `scale`; `overrides` win."""
    check_scale(scale)
    base = SCALE_OVERRIDES[scale].get(network)
    if base is None:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(ARCHITECTURES)}")
    return paper_experiment(network, **{**base, **overrides})


@dataclass(frozen=True)
class NotebookParameters:
    """Every parameter a notebook may take (each notebook's `parameters` cell sets some).

    None means "the scale's value".
    """

    scale: str = "cpu"  # smoke, cpu or paper
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
    ticket_percent: float = 21.1  # weight travel: the ticket nearest this percent remaining

    def __post_init__(self) -> None:
        check_scale(self.scale)
        for name in ("data_root", "results_root", "figures_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(project_path(getattr(self, name))))
        for network in self.network_list:
            if network not in ARCHITECTURES:
                raise ValueError(f"unknown network {network!r}; known: {', '.join(ARCHITECTURES)}")
        for name in ("iterations", "rounds", "trials", "control_trials"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.train is not None and not isinstance(self.train, bool):
            raise ValueError(f"train must be True, False or None, got {self.train!r}")

    @property
    def network_list(self) -> list[str]:
        """`networks` as a list."""
        return [n.strip() for n in self.networks.split(",") if n.strip()]

    def experiment(self, network: str, **overrides) -> Experiment:
        """`network`'s experiment at this scale, with this notebook's overrides."""
        mine = {n: getattr(self, n) for n in ("iterations", "rounds", "trials", "control_trials")}
        mine = {n: v for n, v in mine.items() if v is not None}
        return scaled_experiment(network, self.scale, seed=self.seed, **{**overrides, **mine})

    def iterative(self, network: str) -> Experiment:
        """Iterative pruning with both of the paper's controls: what the notebooks draw."""
        return self.experiment(network, controls=CONTROLS)

    def oneshot(self, network: str) -> Experiment:
        """The one-shot sweep at the same per-layer sizes, tickets only."""
        return self.experiment(network, strategy="oneshot")

    @property
    def training(self) -> bool:
        """Whether `run` may train: `train`, else yes except at paper scale without a GPU
        (there the notebooks draw what the committed store, figures/data/paper/, holds)."""
        return self.train if self.train is not None else self.scale != "paper" or torch.cuda.is_available()

    def run(self, experiment: Experiment, data=None):
        """`lth.run` as the notebooks call it: this notebook's folders, the committed portable
        store of this scale (figures/data/paper/ at paper scale) before the results store,
        training only where `training` allows, progress bars except at smoke scale."""
        from lth_lib.portable import COMMITTED_SCALES, portable_store
        from lth_lib.runner import run

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


def experiments_in_order(scale: str) -> list[Experiment]:
    """Every experiment the notebooks draw at `scale`, as their default parameters make
    them, in the order `lth_lib.advance` trains them: LeNet iterative, the LeNet one-shot
    sweep, then Conv-2, Conv-4 and Conv-6 (the Conv-2 one-shot sweep is left out: its
    trained dense networks, which its levels are pruned from, are too large to travel)."""
    params = NotebookParameters(scale=check_scale(scale))
    return [
        params.iterative("lenet300"),
        params.oneshot("lenet300"),
        *(params.iterative(network) for network in ("conv2", "conv4", "conv6")),
    ]
