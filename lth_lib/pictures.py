"""Pictures of the tickets themselves: which weights survive each round of pruning.

- LeNet-300-100: the first layer as a 28x28 map of the input pixels, each pixel shaded by
  the fraction of its 300 weights the ticket keeps, relative to the whole layer's.
- Conv-2/4/6: the first conv layer's filters as a mosaic of 3x3 tiles, each kernel
  position shaded by the fraction of its 3 colour channels' weights kept, relative to the
  layer's. Any network whose first layer is fully connected on a square image, or a
  convolution, is drawn the same way.
- Every network: the percent of weights remaining in each layer, round by round.

    fig = mask_grid_figure(results, scale="cpu")   # a static grid over the rounds
    mask_slider(results, scale="cpu")              # the same maps behind a slider (JupyterLab)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lth_lib.plots import default_levels, legend_above, percent_label, stamp
from lth_lib.pruning import Mask, mask_counts, remaining_fraction
from lth_lib.results import Results

MAP_COLORS = "viridis"
# Maps are shaded relative to the layer: a pixel's (or kernel position's) fraction of weights
# kept over the whole layer's, from 0 (all pruned) to 2 (kept twice as often as the layer's
# average) or more, so the pattern stays visible as the layer thins out.
MAP_RANGE = (0.0, 2.0)
MAP_LABEL = "kept vs the layer's average"


def trial_masks(results: Results, trial: int = 0) -> dict[int, Mask]:
    """Trial `trial`'s ticket mask at every level the results hold, by level."""
    if not 0 <= trial < results.experiment.trials:
        raise ValueError(f"trial must be in 0..{results.experiment.trials - 1}, got {trial}")
    return {level: masks[trial] for level, masks in sorted(results.masks.items())}


def first_layer_map(mask: Mask) -> np.ndarray:
    """The first layer's mask as an image of kept fractions in [0, 1]. A fully connected
    first layer on a square image (LeNet: [300, 784]): the fraction of each input pixel's
    weights kept (28x28). A convolution ([filters, channels, k, k]): each kernel position's
    fraction over the input channels, one k x k tile per filter, 8 to a row with a blank
    (NaN) line between tiles."""
    first = next(iter(mask.values())).float()
    if first.dim() == 2:
        side = math.isqrt(first.shape[1])
        return first.mean(dim=0).reshape(side, side).numpy()
    kept = first.mean(dim=1).numpy()  # [filters, k, k]
    per_row, tile = 8, kept.shape[-1] + 1
    rows = math.ceil(len(kept) / per_row)
    image = np.full((rows * tile - 1, per_row * tile - 1), np.nan)
    for index, kernel in enumerate(kept):
        row, column = divmod(index, per_row)
        image[row * tile : row * tile + tile - 1, column * tile : column * tile + tile - 1] = kernel
    return image


def layer_remaining(results: Results, trial: int = 0) -> pd.DataFrame:
    """One row per level and layer of trial `trial`'s ticket: weights kept, of how many,
    and the percent remaining in that layer and in the whole network."""
    rows = []
    for level, mask in trial_masks(results, trial).items():
        total, counts = remaining_fraction(mask), mask_counts(mask)
        for layer, kept in mask.items():
            rows.append(
                {
                    "level": level,
                    "layer": layer,
                    "kept": counts[layer],
                    "weights": kept.numel(),
                    "percent": 100 * float(kept.float().mean()),
                    "network_percent": 100 * total,
                }
            )
    return pd.DataFrame(rows)


def plot_first_layer(mask: Mask, ax: Axes | None = None, title: str | None = None) -> Axes:
    """`first_layer_map` of `mask` over the first layer's fraction of weights kept (see
    MAP_RANGE), on `ax` (a new figure when None), no axes ticks."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    relative = first_layer_map(mask) / float(next(iter(mask.values())).float().mean())
    ax.imshow(relative, cmap=MAP_COLORS, vmin=MAP_RANGE[0], vmax=MAP_RANGE[1], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


def plot_layer_remaining(
    remaining: pd.DataFrame, ax: Axes | None = None, levels: Sequence[int] | None = None
) -> Axes:
    """Grouped bars: per level (labelled with the network's percent remaining), the
    percent of each layer's weights remaining, on a log axis."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    if levels is not None:
        remaining = remaining[remaining.level.isin(levels)]
    table = remaining.pivot(index="level", columns="layer", values="percent")[remaining.layer.unique()]
    width = 0.8 / len(table.columns)
    positions = np.arange(len(table))
    for index, layer in enumerate(table.columns):
        ax.bar(positions + (index - (len(table.columns) - 1) / 2) * width, table[layer], width, label=layer)
    network_percent = remaining.groupby("level").network_percent.first()
    ax.set_xticks(positions, [f"{percent_label(network_percent[level])}%\n(round {level})" for level in table.index],
                  fontsize="small")  # fmt: skip
    ax.set_xlabel("Percent of the network's weights remaining")
    ax.set_ylabel("Percent of the layer's weights remaining")
    _log_percent_axis(ax)
    legend_above(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def mask_figure(results: Results, level: int, trial: int = 0, scale: str | None = None) -> Figure:
    """One level of trial `trial`'s ticket: the first layer's map, beside every layer's
    percent remaining over the rounds with this level marked; stamped."""
    masks = trial_masks(results, trial)
    if level not in masks:
        raise ValueError(f"level must be one of {sorted(masks)}, got {level}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), width_ratios=(1, 1.4))
    remaining = layer_remaining(results, trial)
    percent = percent_label(remaining.query("level == @level").network_percent.iloc[0])
    plot_first_layer(masks[level], left, f"{_first_layer_name(masks[level])}, round {level}")
    fig.colorbar(left.images[-1], ax=left, shrink=0.8, label=MAP_LABEL, extend="max")
    for layer, rows in remaining.groupby("layer", sort=False):
        right.plot(rows.level, rows.percent, marker=".", label=layer)
    right.axvline(level, color="0.3", linestyle="--", linewidth=1)
    right.set_xlabel("Round")
    right.set_ylabel("Percent of the layer's weights remaining")
    _log_percent_axis(right)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_above(right, title=f"round {level}: {percent}% of the network's weights remaining")
    right.grid(alpha=0.3)
    stamp(fig, results.experiment, scale, levels_done=results.levels_done, precision=results.precision)
    return fig


def mask_grid_figure(
    results: Results, trial: int = 0, scale: str | None = None, levels: Sequence[int] | None = None
) -> Figure:
    """The first layer's map at a few levels (default: about six spread over the rounds
    done) in a row, above the per-layer percent remaining at those levels; stamped."""
    masks = trial_masks(results, trial)
    done = sorted(masks)
    levels = list(levels) if levels is not None else [done[i] for i in default_levels(len(done) - 1, 6)]
    fig = plt.figure(figsize=(max(8.0, 2.2 * len(levels)), 6.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.15))
    axes = top.subplots(1, len(levels), squeeze=False)[0]
    remaining = layer_remaining(results, trial)
    for ax, level in zip(axes, levels):
        percent = percent_label(remaining.query("level == @level").network_percent.iloc[0])
        plot_first_layer(masks[level], ax, f"round {level}: {percent}%")
    top.colorbar(axes[-1].images[-1], ax=list(axes), shrink=0.8, label=MAP_LABEL, extend="max")
    top.suptitle(f"{_first_layer_name(masks[levels[0]])}: where the ticket keeps its weights (trial {trial})")
    plot_layer_remaining(remaining, bottom.subplots(), levels=levels)
    stamp(fig, results.experiment, scale, levels_done=results.levels_done, precision=results.precision)
    return fig


def mask_slider(results: Results, trial: int = 0, scale: str | None = None):
    """`mask_figure` behind an ipywidgets slider over the rounds (JupyterLab, Notebook): a
    VBox of an IntSlider described "round" and the figure of the round it selects."""
    import ipywidgets
    from IPython.display import display

    levels = sorted(trial_masks(results, trial))
    slider = ipywidgets.IntSlider(value=levels[0], min=levels[0], max=levels[-1], description="round",
                                  continuous_update=False)  # fmt: skip
    output = ipywidgets.Output()

    def show(level: int) -> None:
        with output:
            output.clear_output(wait=True)
            fig = mask_figure(results, level, trial, scale)
            display(fig)
            plt.close(fig)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(slider.value)
    return ipywidgets.VBox([slider, output])


def _log_percent_axis(ax: Axes) -> None:
    """A log y axis labelled with plain percents (50, 20, 10), not powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    low, high = ax.get_ylim()
    few = high / low > 10  # over a decade: label 2 and 5 between the powers of ten, else every tick
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if not few or f"{value:.0e}"[0] in "25" else "")
    )


def _first_layer_name(mask: Mask) -> str:
    layer, first = next(iter(mask.items()))
    if first.dim() == 2:
        return f"{layer}, per input pixel"
    return f"{layer}'s {first.shape[0]} filters, {first.shape[2]}x{first.shape[3]} positions"
