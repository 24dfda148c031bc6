"""lth_lib: the experiments of Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019).

A few calls run the paper's procedure::

    import lth_lib as lth
    exp = lth.paper_experiment("lenet300", iterations=1000, rounds=2)
    results = lth.run(exp)          # trains, or reuses what the results store holds
    results.table()                 # one row per trained network and level
"""

from lth_lib.data import (
    DATA_ENV,
    DataNotFoundError,
    Dataset,
    data_copy,
    describe,
    load_dataset,
    validation_split,
)
from lth_lib.export import export_ticket
from lth_lib.lottery import level_job, plan, prune_tickets, run, train_trials, trial_groups
from lth_lib.models import Network, count_prunable, glorot_init
from lth_lib.notebook import NotebookParameters, notebook_parameters
from lth_lib.pictures import first_layer_map, layer_remaining, mask_figure, mask_grid_figure, mask_slider
from lth_lib.plots import (
    controls_figure,
    paper_figure,
    plot_early_stop_accuracy,
    plot_early_stop_iteration,
    plot_training_curves,
    save_figure,
    scale_caption,
    stability_figure,
    stamp,
    strategy_figure,
    travel_figure,
)
from lth_lib.progress import widgets_wanted
from lth_lib.protocol import (
    PAPER,
    SCALES,
    Experiment,
    PruningHparams,
    TrainingHparams,
    architecture,
    default_scale,
    paper_experiment,
    scaled_experiment,
)
from lth_lib.pruning import (
    dense_mask,
    magnitude_prune,
    mask_counts,
    pruning_schedule,
    random_prune,
    remaining_fraction,
    surviving_counts,
)
from lth_lib.results import Record, Results, control_gaps, summary_text, trained_text
from lth_lib.stability import Stability, instability, interpolation_errors, stability
from lth_lib.store import RESULTS_ENV, experiment_dir, results_root
from lth_lib.train import Member, TrainResult, early_stop, train
from lth_lib.travel import travel_summary, weight_travel

__all__ = [
    "DATA_ENV",
    "PAPER",
    "RESULTS_ENV",
    "SCALES",
    "DataNotFoundError",
    "Dataset",
    "Experiment",
    "Member",
    "Network",
    "NotebookParameters",
    "PruningHparams",
    "Record",
    "Results",
    "Stability",
    "TrainResult",
    "TrainingHparams",
    "architecture",
    "control_gaps",
    "controls_figure",
    "count_prunable",
    "data_copy",
    "default_scale",
    "dense_mask",
    "describe",
    "early_stop",
    "experiment_dir",
    "export_ticket",
    "first_layer_map",
    "glorot_init",
    "instability",
    "interpolation_errors",
    "layer_remaining",
    "level_job",
    "load_dataset",
    "magnitude_prune",
    "mask_counts",
    "mask_figure",
    "mask_grid_figure",
    "mask_slider",
    "notebook_parameters",
    "paper_experiment",
    "paper_figure",
    "plan",
    "plot_early_stop_accuracy",
    "plot_early_stop_iteration",
    "plot_training_curves",
    "prune_tickets",
    "pruning_schedule",
    "random_prune",
    "remaining_fraction",
    "results_root",
    "run",
    "save_figure",
    "scale_caption",
    "scaled_experiment",
    "stability",
    "stability_figure",
    "stamp",
    "strategy_figure",
    "summary_text",
    "surviving_counts",
    "train",
    "train_trials",
    "trained_text",
    "travel_figure",
    "travel_summary",
    "trial_groups",
    "validation_split",
    "weight_travel",
    "widgets_wanted",
]
