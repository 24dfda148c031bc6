"""Weight travel (the paper's appendix): do winning-ticket weights move further in training?

The dense network of each trial is trained from theta_0 to theta_T. Its weights are split
by the ticket mask at some pruning level: the survivors (the winning ticket) and the
weights pruned by then. For each, how far they moved (|theta_T - theta_0|) and whether they
moved away from zero (|theta_T| - |theta_0|).
"""

from __future__ import annotations

import pandas as pd

from lth_lib.models import layer_weights
from lth_lib.results import Results


def weight_travel(results: Results, level: int) -> pd.DataFrame:
    """One row per trial, layer and weight of the dense network: initial and trained
    values, whether the weight survives in `level`'s ticket, its travel and its change
    in magnitude."""
    if level not in results.masks or level == 0:
        raise ValueError(f"level must be one of the pruned levels {sorted(results.masks)[1:]}, got {level}")
    network, frames = results.experiment.network, []
    for trial, (initial, final, mask) in enumerate(
        zip(results.initial_weights, results.dense_weights, results.masks[level])
    ):
        initial, final = layer_weights(network, initial), layer_weights(network, final)
        for layer, kept in mask.items():
            start, end = initial[layer].flatten(), final[layer].flatten()
            frames.append(
                pd.DataFrame(
                    {
                        "trial": trial,
                        "layer": layer,
                        "in_ticket": kept.flatten().numpy(),
                        "initial": start.numpy(),
                        "final": end.numpy(),
                        "travel": (end - start).abs().numpy(),
                        "magnitude_change": (end.abs() - start.abs()).numpy(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def travel_summary(travel: pd.DataFrame) -> pd.DataFrame:
    """Per layer, ticket vs pruned weights: count, mean travel, mean change in magnitude,
    and the fraction that moved away from zero."""
    grouped = travel.assign(away_from_zero=travel.magnitude_change > 0).groupby(
        ["layer", "in_ticket"], sort=False
    )
    out = grouped.agg(
        weights=("travel", "size"),
        mean_travel=("travel", "mean"),
        mean_magnitude_change=("magnitude_change", "mean"),
        fraction_away_from_zero=("away_from_zero", "mean"),
    )
    return out.reset_index()
