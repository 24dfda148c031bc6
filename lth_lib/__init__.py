"""lth_lib: the experiments of Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019).

A few calls run the paper's procedure::

    import lth_lib as lth
    exp = lth.paper_experiment("lenet300", iterations=1000, rounds=2)
    results = lth.run(exp)          # trains, or reuses what the results store holds
    results.table()                 # one row per trained network and level
"""

from lth_lib.data import DATA_ENV, DataNotFoundError, Dataset, data_copy, describe, load_dataset, validation_split
from lth_lib.lottery import (
    Experiment,
    PruningHparams,
    Record,
    level_job,
    paper_experiment,
    prune_tickets,
    pruning_schedule,
)
from lth_lib.models import ARCHITECTURES, Network, build_network, count_prunable, glorot_init
from lth_lib.plots import (
    controls_figure,
    paper_figure,
    strategy_figure,
    travel_figure,
    plot_early_stop_accuracy,
    plot_early_stop_iteration,
    plot_training_curves,
    save_figure,
    scale_caption,
    stamp,
)
from lth_lib.pruning import (
    dense_mask,
    layer_rates,
    load_mask,
    magnitude_prune,
    mask_counts,
    random_prune,
    remaining_fraction,
    save_mask,
    sparsity_report,
    surviving_counts,
)
from lth_lib.runner import Results, control_gaps, plan, run, summary_text, trained_text
from lth_lib.scales import SCALES, NotebookParameters, default_scale, notebook_parameters, scaled_experiment
from lth_lib.store import RESULTS_ENV, experiment_dir, results_root
from lth_lib.train import Member, TrainingHparams, TrainResult, early_stop, paper_training, train
from lth_lib.travel import travel_summary, weight_travel

__all__ = [
    "ARCHITECTURES",
    "DATA_ENV",
    "DataNotFoundError",
    "Dataset",
    "Experiment",
    "Member",
    "Network",
    "PruningHparams",
    "Record",
    "TrainResult",
    "TrainingHparams",
    "build_network",
    "count_prunable",
    "data_copy",
    "dense_mask",
    "early_stop",
    "glorot_init",
    "layer_rates",
    "level_job",
    "load_dataset",
    "load_mask",
    "magnitude_prune",
    "mask_counts",
    "paper_experiment",
    "paper_figure",
    "plot_early_stop_accuracy",
    "plot_early_stop_iteration",
    "plot_training_curves",
    "paper_training",
    "prune_tickets",
    "random_prune",
    "remaining_fraction",
    "run",
    "Results",
    "plan",
    "RESULTS_ENV",
    "experiment_dir",
    "results_root",
    "save_figure",
    "save_mask",
    "scale_caption",
    "sparsity_report",
    "stamp",
    "surviving_counts",
    "train",
    "validation_split",
    "SCALES",
    "NotebookParameters",
    "default_scale",
    "notebook_parameters",
    "scaled_experiment",
    "travel_summary",
    "weight_travel",
    "describe",
    "pruning_schedule",
    "control_gaps",
    "summary_text",
    "trained_text",
    "controls_figure",
    "strategy_figure",
    "travel_figure",
]
