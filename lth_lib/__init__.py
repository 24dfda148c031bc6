"""lth_lib: the experiments of Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019).

A few calls run the paper's procedure::

    import lth_lib as lth
    exp = lth.paper_experiment("lenet300", iterations=1000, rounds=2)
    results = lth.run(exp)          # trains, or reuses what the results store holds
    results.table()                 # one row per trained network and level

The names here are what the notebooks and a user need: experiments and running them, the
networks (a new one is an entry of `NETWORKS`), data, the reports and the figures. The
modules hold the rest (the README's Layout section draws how they fit together).
"""

from lth_lib.data import DataNotFoundError, describe, load_dataset
from lth_lib.export import export_ticket
from lth_lib.lottery import NothingStoredError, run, train_trials
from lth_lib.models import count_prunable, plain_network
from lth_lib.notebook import notebook_parameters
from lth_lib.pictures import layer_remaining, mask_figure, mask_grid_figure, mask_slider
from lth_lib.plots import (
    controls_figure,
    deeper_figure,
    paper_figure,
    plot_early_stop_accuracy,
    plot_early_stop_iteration,
    plot_training_curves,
    save_figure,
    scale_caption,
    stability_figure,
    strategy_figure,
    travel_figure,
)
from lth_lib.progress import widgets_wanted
from lth_lib.protocol import (
    NETWORKS,
    Architecture,
    Conv,
    CustomNetwork,
    Dense,
    Experiment,
    NetworkProtocol,
    Pool,
    PruningHparams,
    TrainingHparams,
    default_scale,
    paper_experiment,
    register_network,
    scaled_experiment,
    warmup_experiment,
)
from lth_lib.pruning import pruning_schedule
from lth_lib.results import NotKeptError, Record, Results, control_gaps, summary_text, trained_text
from lth_lib.stability import stability
from lth_lib.travel import travel_summary, weight_travel

__all__ = [
    "NETWORKS",
    "Architecture",
    "Conv",
    "CustomNetwork",
    "DataNotFoundError",
    "Dense",
    "Experiment",
    "NetworkProtocol",
    "NotKeptError",
    "NothingStoredError",
    "Pool",
    "PruningHparams",
    "Record",
    "Results",
    "TrainingHparams",
    "control_gaps",
    "controls_figure",
    "count_prunable",
    "deeper_figure",
    "default_scale",
    "describe",
    "export_ticket",
    "layer_remaining",
    "load_dataset",
    "mask_figure",
    "mask_grid_figure",
    "mask_slider",
    "notebook_parameters",
    "paper_experiment",
    "paper_figure",
    "plain_network",
    "plot_early_stop_accuracy",
    "plot_early_stop_iteration",
    "plot_training_curves",
    "pruning_schedule",
    "register_network",
    "run",
    "save_figure",
    "scale_caption",
    "scaled_experiment",
    "stability",
    "stability_figure",
    "strategy_figure",
    "summary_text",
    "train_trials",
    "trained_text",
    "travel_figure",
    "travel_summary",
    "warmup_experiment",
    "weight_travel",
    "widgets_wanted",
]
