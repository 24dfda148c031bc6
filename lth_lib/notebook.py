"""The notebooks: what each one draws, and the parameters every one takes.

`NOTEBOOKS` is the one registry of what each notebook draws with its default parameters:
its networks, and per network the experiments it shows, by the labels of `DRAWINGS`.
`regenerate` runs the notebooks in its order, `advance` trains its experiments in that
order, the cluster's jobs train what it lists, and each notebook asks it for its own
networks and experiments (`NotebookParameters.experiments`).

A notebook's `parameters` cell sets some parameters (papermill injects others);
`notebook_parameters(globals(), name)` reads them, rejecting unknown names (papermill
only warns about them) and bad values before any work starts. The parameters are the
fields of `NotebookParameters` and every field of an experiment (`protocol.PARAMETERS`:
`-p conv_rate 0.2`, `-p lr 1e-3`), except those that the notebook's drawings themselves
set (`DRAWN`): a protocol parameter applies to every experiment the notebook draws, and
None means "the scale's value".
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lth_lib.data import Dataset, load_dataset
from lth_lib.paths import project_path
from lth_lib.protocol import (
    CONTROLS,
    DROPOUT,
    NETWORKS,
    PARAMETERS,
    Experiment,
    architecture,
    check_parameters,
    check_scale,
    default_rewind_iterations,
    default_scale,
    paper_experiment,
    scaled_experiment,
    warmup_experiment,
)

# Scales whose figures are committed, and where: only a full regeneration at one of them,
# with no parameter overrides, writes there (`python -m lth_lib.regenerate`).
COMMITTED_FIGURES = {"cpu": "figures", "paper": "figures/paper"}
# An output's metadata key naming the PNG file in figures_dir it shows (`NotebookParameters.save`)
SAVED_AS = "lth_saved_as"


@dataclass(frozen=True)
class Draws:
    """What one notebook draws with its default parameters."""

    networks: tuple[str, ...]  # its networks, unless its `networks` parameter names others
    drawings: tuple[str, ...]  # per network, keys of DRAWINGS, in the order it shows them
    main_job: bool = True  # run by `python -m lth_lib.regenerate` without names (else only when named)


# What each notebook draws, in the order `regenerate` runs them (a later notebook reuses the
# runs an earlier one stored) and `advance` trains their experiments.
NOTEBOOKS: dict[str, Draws] = {
    "lenet_mnist": Draws(("lenet300",), ("iterative",)),
    "conv_cifar10": Draws(("conv2", "conv4", "conv6"), ("iterative",)),
    "oneshot_vs_iterative": Draws(("lenet300", "conv2"), ("iterative", "one-shot")),
    "controls": Draws(("lenet300", "conv2"), ("iterative",)),
    "weight_travel": Draws(("lenet300",), ("iterative",)),
    "tickets": Draws(("lenet300", "conv2"), ("iterative",)),
    "dropout": Draws(("conv2", "conv4", "conv6"), ("dropout", "no dropout")),
    "rewinding": Draws(("lenet300", "conv2"), ("rewound",)),
    # Section 4: at `cpu` it needs more than the main job's hour on 2 cores, so it runs when named
    "deeper": Draws(("resnet20", "vgg19"), ("no warm-up", "warm-up", "late rewinding"), main_job=False),
}
# Fields of an experiment that the drawings set, so no parameter may: what each would do
# instead.
DRAWN = {
    "strategy": "oneshot_vs_iterative draws both strategies",
    "controls": "the drawings choose their controls",
    "dropout": "the dropout notebook trains with and without it",
    "rewind_iteration": "use rewind_iterations, the rewinding notebook's list of them",
    "warmup": "the deeper notebook draws with and without the paper's warm-up",
}


@dataclass(frozen=True)
class NotebookParameters:
    """Every parameter a notebook may take, for one notebook (`notebook`, a key of
    NOTEBOOKS; None: no notebook's defaults). `protocol` holds the experiment fields given
    (`protocol.PARAMETERS`, e.g. {"trials": 3, "conv_rate": 0.2}); `of` takes them flat."""

    notebook: str | None = None
    scale: str | None = None  # smoke, cpu or paper (None: `protocol.default_scale()`)
    networks: str = ""  # comma-separated networks, e.g. "conv2,conv4" ("": the notebook's own)
    # Folders; a relative one is taken from the project root, like LTH_DATA and LTH_RESULTS.
    data_root: str | None = None  # None: LTH_DATA, else torchvision's download
    results_root: str | None = None  # None: LTH_RESULTS, else results/ in the project
    figures_dir: str | None = None  # where to save the figures (None: only show them)
    train: bool | None = None  # None: train what is missing, except at paper scale without a GPU
    ticket_percent: float = 21.1  # weight travel, stability: the ticket nearest this percent remaining
    rewind_iterations: str = ""  # comma-separated iterations k to rewind to ("": the scale's)
    protocol: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, object], notebook: str | None = None) -> NotebookParameters:
        """Notebook `notebook`'s parameters from flat `values` (its globals, `-p` pairs):
        unknown names are refused with the list of known ones; protocol fields set to None
        are the scale's."""
        check_parameter_names(values)
        own = {name: value for name, value in values.items() if name in _OWN}
        given = {name: value for name, value in values.items() if name not in _OWN and value is not None}
        return cls(notebook, **own, protocol=given)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", default_scale() if self.scale is None else check_scale(self.scale))
        for name in ("data_root", "results_root", "figures_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(project_path(getattr(self, name))))
        if self.notebook is not None and self.notebook not in NOTEBOOKS:
            raise ValueError(f"unknown notebook {self.notebook!r}; notebooks: {', '.join(NOTEBOOKS)}")
        for network in self.network_list:
            if network not in NETWORKS:
                raise ValueError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")
        if not all(k.strip().isdigit() for k in self.rewind_iterations.split(",") if k.strip()):
            raise ValueError(
                f"rewind_iterations must be comma-separated iterations, got {self.rewind_iterations!r}"
            )
        if self.train is not None and not isinstance(self.train, bool):
            raise ValueError(f"train must be True, False or None, got {self.train!r}")
        check_parameter_names(self.protocol)
        check_parameters(self.protocol)
        for network in self.network_list or NETWORKS:  # the ranges, as the dataclasses check them
            paper_experiment(network, **self._protocol_for(network))

    @property
    def network_list(self) -> list[str]:
        """`networks` as a list, else the notebook's own."""
        given = [n.strip() for n in self.networks.split(",") if n.strip()]
        return given or (list(NOTEBOOKS[self.notebook].networks) if self.notebook else [])

    def experiment(self, network: str, **overrides) -> Experiment:
        """`network`'s experiment at this scale with `overrides` and this notebook's
        protocol parameters, which win."""
        return scaled_experiment(network, self.scale, **{**overrides, **self._protocol_for(network)})

    def experiments(self, drawing: str | None = None) -> dict:
        """What the notebook draws: per network, its experiments by label ({"lenet300":
        {"iterative": ...}}); with `drawing` (a label it draws), that experiment per network."""
        if self.notebook is None:
            raise ValueError("these parameters are for no notebook: give notebook= (a key of NOTEBOOKS)")
        drawings = NOTEBOOKS[self.notebook].drawings
        if drawing is not None and drawing not in drawings:
            raise ValueError(f"{self.notebook} draws {', '.join(drawings)}, not {drawing!r}")
        drawn = {network: {label: e for d in drawings for label, e in DRAWINGS[d](self, network).items()}
                 for network in self.network_list}  # fmt: skip
        return (
            drawn if drawing is None else {network: by_label[drawing] for network, by_label in drawn.items()}
        )

    def data(self, network: str, device: str | None = None) -> Dataset:
        """`network`'s data set from this notebook's data_root, on `device` (None: where
        `run` trains, a GPU if there is one)."""
        from lth_lib.train import default_device

        return load_dataset(architecture(network).dataset, self.data_root, default_device(device))

    @property
    def training(self) -> bool:
        """Whether `run` may train: `train`, else yes except at paper scale without a GPU
        (there the notebooks draw what the committed store, figures/data/paper/, holds)."""
        import torch

        return self.train if self.train is not None else self.scale != "paper" or torch.cuda.is_available()

    def run(self, experiment: Experiment, data: Dataset | None = None):
        """`lth.run` as the notebooks call it: this notebook's folders, the committed portable
        store of this scale (figures/data/paper/ at paper scale) before the results store,
        training only where `training` allows, progress bars except at smoke scale. Where it
        may not train, it draws whichever of `stored_versions(experiment)` the stores hold
        the most levels of (the experiment itself on a tie): at paper scale, the first pass
        of Figure 5's networks until their full experiments catch up; the captions name its
        controls per ticket (`plots.scale_caption`)."""
        from lth_lib.lottery import NothingStoredError, run
        from lth_lib.portable import committed_store

        def stored(exp: Experiment):
            return run(exp, data, data_root=self.data_root, results_root=self.results_root,
                       portable=committed_store(self.scale), training=self.training,
                       progress=self.scale != "smoke")  # fmt: skip

        if self.training:
            return stored(experiment)
        found, missing = [], []
        for version in stored_versions(experiment):
            try:
                found.append(stored(version))
            except NothingStoredError as error:
                missing.append(error)
        if not found:
            raise missing[0]  # naming the experiment itself
        return max(found, key=lambda results: results.levels_done)

    def stability(self, results, level: int):
        """`lth.stability` of trial 0's ticket at `level` as the notebooks measure it: read
        from the results store, else trained where `training` allows (on this notebook's
        data), else None."""
        from lth_lib.stability import stability

        return stability(results, level, data_root=self.data_root, training=self.training)

    def reading(self):
        """The notebook's Reading, computed from the stored results of what it draws
        (`lth_lib.readings`), as Markdown; its facts are kept beside the figures
        (figures_dir/readings/) when figures_dir is set."""
        from IPython.display import Markdown

        from lth_lib.readings import notebook_facts, render, save_facts

        found = notebook_facts(self)
        if self.figures_dir is not None:
            save_facts(found, self.figures_dir)
        return Markdown(render(found))

    def save(self, fig, name: str) -> None:
        """Save `fig` as figures_dir/name.{png,svg} when figures_dir is set, and show it there
        and then, tagged with its file's name (`SAVED_AS`), so that a kept notebook links the
        file rather than embed it again (`regenerate.keep_notebook`)."""
        if self.figures_dir is not None:
            import matplotlib.pyplot as plt
            from IPython import get_ipython
            from IPython.display import display

            from lth_lib.plots import save_figure

            save_figure(fig, Path(self.figures_dir) / name)
            if get_ipython() is not None:  # in a kernel: shown once, tagged, not again at the cell's end
                display(fig, metadata={SAVED_AS: f"{name}.png"})
                plt.close(fig)

    def _protocol_for(self, network: str) -> dict:
        """The protocol parameters that apply to `network` (conv_rate only with conv layers)."""
        return {name: value for name, value in self.protocol.items()
                if name != "conv_rate" or architecture(network).convolutional}  # fmt: skip


def _iterative(params: NotebookParameters, network: str) -> Experiment:
    """Iterative pruning with both of the paper's controls."""
    return params.experiment(network, controls=CONTROLS)


def _rewound(params: NotebookParameters, network: str) -> dict[str, Experiment]:
    """Per k, tickets rewound to iteration k; k = 0 is the paper's own procedure, the
    iterative experiment (drawn tickets only), whose tickets train as they would alone."""
    given = [int(k) for k in params.rewind_iterations.split(",") if k.strip()]
    ks = given or default_rewind_iterations(network, params.scale)
    return {f"k = {k:,}": params.experiment(network, rewind_iteration=k) if k else _iterative(params, network)
            for k in ks}  # fmt: skip


def _late_rewinding(params: NotebookParameters, network: str) -> dict[str, Experiment]:
    """Section 4's networks at the original learning rate without warm-up, tickets rewound
    to the last of the scale's rewind points (10% of training: past the iterations where
    Frankle et al. 2020 find ResNet-20 and VGG-16 stable), with random reinitialisation."""
    k = default_rewind_iterations(network, params.scale)[-1]
    return {"late rewinding": params.experiment(network, rewind_iteration=k, controls=("reinit",))}


# What each label a notebook draws is, for one network: its experiments by label.
DRAWINGS: dict[str, Callable[[NotebookParameters, str], dict[str, Experiment]]] = {
    "iterative": lambda params, network: {"iterative": _iterative(params, network)},
    # the one-shot sweep at the same per-layer sizes, tickets only
    "one-shot": lambda params, network: {"one-shot": params.experiment(network, strategy="oneshot")},
    # the dropout figure's: iterative pruning with dropout, beside random reinitialisation
    "dropout": lambda params, network: {
        "dropout": params.experiment(network, dropout=DROPOUT, controls=("reinit",))
    },
    # the same networks without dropout: the iterative experiment
    "no dropout": lambda params, network: {"no dropout": _iterative(params, network)},
    # tickets rewound to each iteration k of `rewind_iterations` (else the scale's), tickets
    # only beyond k = 0
    "rewound": _rewound,
    # Section 4: the original learning rate without warm-up, and the rate warm-up lets tickets
    # train at (`protocol.warmup_experiment`), each beside random reinitialisation
    "no warm-up": lambda params, network: {"no warm-up": params.experiment(network, controls=("reinit",))},
    "warm-up": lambda params, network: {
        "warm-up": warmup_experiment(
            network, params.scale, controls=("reinit",), **params._protocol_for(network)
        )
    },
    "late rewinding": _late_rewinding,
}


def first_pass(exp: Experiment) -> Experiment | None:
    """The part of `exp` that draws its figure soonest: its tickets, each beside one random
    reinitialisation rather than the paper's 3 reinitialisations and 3 random prunings (at
    paper scale 2 networks per ticket and level instead of 7); None where that is `exp`
    itself, or `exp` is not iterative with random reinitialisation. Its own experiment
    (its own lineage of masks, so the figure never mixes two runs), trained first at paper
    scale (`advance.queue`); the full experiment trains its tickets again later, the cost of
    drawing Figure 5 from 2 networks per trial and level rather than 7."""
    if exp.pruning.strategy != "iterative" or "reinit" not in exp.controls:
        return None
    part = dataclasses.replace(exp, controls=("reinit",), control_trials=1)
    return None if part == exp else part


def stored_versions(exp: Experiment) -> list[Experiment]:
    """The experiments whose stored levels can draw `exp`'s figures, best first: `exp`, then
    its first pass (`first_pass`)."""
    return [exp, *filter(None, [first_pass(exp)])]


_OWN = {f.name for f in dataclasses.fields(NotebookParameters)} - {"notebook", "protocol"}
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def parameter_names() -> list[str]:
    """Every name a notebook parameter may have."""
    return sorted(_OWN | set(PARAMETERS) - set(DRAWN))


def check_parameter_names(names) -> None:
    """A clear error naming every parameter in `names` that no notebook takes."""
    drawn = sorted(set(names) & set(DRAWN))
    if drawn:
        raise ValueError(f"{drawn[0]!r} is not a notebook parameter: {DRAWN[drawn[0]]}")
    unknown = sorted(set(names) - set(parameter_names()))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
            f"parameters are: {', '.join(parameter_names())}"
        )


def notebook_parameters(namespace: dict, notebook: str | None = None) -> NotebookParameters:
    """Notebook `notebook`'s parameters from its globals, after papermill's injection.

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
    return NotebookParameters.of(values, notebook)
