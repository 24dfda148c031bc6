"""Figures in the style of the paper's: accuracy and early-stop iteration against the
fraction of weights remaining, and test accuracy over training.

    fig = paper_figure(results, scale="cpu")
    save_figure(fig, "figures/lenet300-iterative")   # .png and .svg

Every plot takes an `ax` (a new figure when None) and returns it, so plots can be
overlaid: call `plot_early_stop_accuracy` twice on one axes with different `label`s to
compare one-shot with iterative pruning. Lines are the mean over trials (and over a
control's networks); error bars and bands span the minimum and maximum, as in the paper.
Legends sit above their axes (`legend_above`), never over the data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine
from matplotlib.legend import Legend
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from lth_lib.protocol import STABLE_BELOW, Experiment
from lth_lib.results import Results
from lth_lib.stability import Stability

KIND_NAMES = {"ticket": "winning ticket", "reinit": "random reinit", "random_prune": "random pruning"}
METRIC_LABELS = {
    "early_stop_test_acc": "Test accuracy at early stop",
    "early_stop_val_acc": "Validation accuracy at early stop",
    "early_stop_val_loss": "Validation loss at early stop",
    "final_test_acc": "Test accuracy at end of training",
    "early_stop_iteration": "Early-stop iteration (validation)",
    "test_acc": "Test accuracy",
    "val_acc": "Validation accuracy",
    "test_loss": "Test loss",
    "val_loss": "Validation loss",
}
STRATEGY_NAMES = {"iterative": "iterative", "oneshot": "one-shot"}
TRAVEL_COLUMNS = {
    "travel": r"distance travelled $|\theta_T - \theta_0|$",
    "magnitude_change": r"change in magnitude $|\theta_T| - |\theta_0|$",
}
PERCENT_LABEL = "Percent of weights remaining"
STAMP_GID = "lth-stamp"
STAMP_FONTSIZE = 7.0


def scale_caption(
    exp: Experiment, scale: str | None = None, strategy: str | None = None, levels_done: int | None = None,
    precision: str = "float32",
) -> str:  # fmt: skip
    """One line naming what a figure shows, e.g. "lenet300 · iterative · 1,000 iterations ·
    3 rounds · 2 trials (+1 reinit, +1 random_prune per ticket) · data mnist-torchvision ·
    scale cpu". `scale` (a free-form name for the run's size) is left out when None;
    `strategy` replaces the experiment's own (e.g. "iterative vs one-shot"); `levels_done`
    (`Results.levels_done`) short of every level gives the coverage, e.g. "7 of 20 rounds";
    a `precision` other than the paper's float32 (`Results.precision`) is named, e.g.
    "precision float32, tf32" (a deviation, README: Deviations)."""
    trials = f"{exp.trials:,} trial{'s' if exp.trials != 1 else ''}"
    if exp.controls:
        trials += " (" + ", ".join(f"+{exp.control_trials} {c}" for c in exp.controls) + " per ticket)"
    parts = [
        exp.network,
        strategy or STRATEGY_NAMES.get(exp.pruning.strategy, exp.pruning.strategy),
        f"{exp.training.iterations:,} iterations",
        _rounds(exp.pruning.rounds, levels_done),
        trials,
    ]
    if exp.training.dropout:
        parts.append(f"dropout {exp.training.dropout:g}")
    if exp.training.optimizer != "adam":
        parts.append(f"{exp.training.optimizer} lr {exp.training.lr:g}")
    if exp.training.warmup:
        parts.append(f"warm-up {exp.training.warmup:,}")
    if exp.pruning.rewind_iteration:
        parts.append(f"rewind to {exp.pruning.rewind_iteration:,}")
    if exp.data_copy:
        parts.append(f"data {exp.data_copy}")
    if precision != "float32":
        parts.append(f"precision {precision}")
    if scale:
        parts.append(f"scale {scale}")
    return " · ".join(parts)


def joined_precision(precisions: Iterable[str]) -> str:
    """Several results' precisions (`Results.precision`) as one: "float32, tf32"."""
    return ", ".join(sorted({p for joined in precisions for p in joined.split(", ")}))


def _rounds(rounds: int, levels_done: int | None) -> str:
    if levels_done is not None and levels_done < rounds + 1:
        return f"{levels_done - 1:,} of {rounds:,} rounds"
    return f"{rounds:,} round{'s' if rounds != 1 else ''}"


def stamp(
    fig: Figure,
    exp: Experiment,
    scale: str | None = None,
    strategy: str | None = None,
    levels_done: int | None = None,
    precision: str = "float32",
) -> None:
    """Write `scale_caption(exp, scale, strategy, levels_done, precision)` as small grey text along the
    bottom of `fig`, and lay the figure out to leave room for it. Stamping again replaces
    the caption."""
    for text in [t for t in fig.texts if t.get_gid() == STAMP_GID]:
        text.remove()
    fig.text(
        0.5,
        0.005,
        scale_caption(exp, scale, strategy, levels_done, precision),
        ha="center",
        va="bottom",
        fontsize=STAMP_FONTSIZE,
        color="0.45",
        gid=STAMP_GID,
        wrap=True,
    )
    room = min(0.25, 2.6 * STAMP_FONTSIZE / 72 / fig.get_figheight())  # two lines of caption
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, room, 1, 1 - room))
    elif isinstance(engine, TightLayoutEngine):
        engine.set(rect=(0, room, 1, 1))
    else:
        fig.tight_layout(rect=(0, room, 1, 1))


def plot_early_stop_accuracy(
    results: Results,
    ax: Axes | None = None,
    label: str | None = None,
    metric: str = "early_stop_test_acc",
    colors: Mapping[str, str] | None = None,
) -> Axes:
    """Accuracy at the early-stopping iteration (any column of `results.table()` via
    `metric`) against the percent of weights remaining, as in the paper's Figure 4."""
    return _plot_by_level(results, metric, ax, label, colors)


def plot_early_stop_iteration(
    results: Results,
    ax: Axes | None = None,
    label: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> Axes:
    """The early-stop iteration (minimum validation loss) against the percent of weights
    remaining, as in the paper's Figure 4."""
    ax = _plot_by_level(results, "early_stop_iteration", ax, label, colors)
    ax.yaxis.set_major_locator(_integer_locator())
    return ax


def plot_training_curves(
    results: Results,
    levels: Sequence[int] | None = None,
    ax: Axes | None = None,
    kind: str = "ticket",
    metric: str = "test_acc",
) -> Axes:
    """`metric` over training iterations, one line per pruning level (default: about five
    spread over the run, level 0 included), as in the paper's Figure 3. Lines are the mean
    over trials with a min-max band; `kind` picks tickets or a control (dashed). Controls
    are not trained at level 0, so there the dense network is drawn (solid). Accuracy axes
    zoom in on the values after the first tenth of training, as the paper's figures do."""
    curves = results.curves()
    levels = default_levels(results.levels_done - 1) if levels is None else list(levels)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2))
    settled = []
    for i, level in enumerate(levels):
        rows = curves[(curves.level == level) & (curves.kind == (kind if level else "ticket"))]
        rows = rows.dropna(subset=[metric])  # test metrics may be computed at some points only
        if rows.empty:
            raise ValueError(f"no {kind!r} curves at level {level} (levels run 0-{curves.level.max()})")
        stats = rows.groupby("iteration")[metric].agg(["mean", "min", "max"])
        settled.append(stats)
        color = f"C{i % 10}"
        dashed = kind != "ticket" and level != 0
        ax.plot(
            stats.index,
            stats["mean"],
            color=color,
            linestyle="--" if dashed else "-",
            linewidth=1.4,
            label=percent_label(rows.percent_remaining.mean()),
        )
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15, linewidth=0)
    if metric.endswith("acc"):
        _zoom(ax, settled)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("Training iterations")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    title = "% weights remaining" + ("" if kind == "ticket" else f" ({KIND_NAMES.get(kind, kind)})")
    legend_above(ax, title=title)
    ax.grid(alpha=0.3)
    return ax


def paper_figure(results: Results, scale: str | None = None, levels: Sequence[int] | None = None) -> Figure:
    """Three panels: test accuracy over training at a few levels, the early-stop
    iteration, and the accuracy at early stop; stamped with the experiment's caption."""
    fig, (curves, iterations, accuracy) = plt.subplots(1, 3, figsize=(15, 4.8))
    plot_training_curves(results, levels=levels, ax=curves)
    plot_early_stop_iteration(results, ax=iterations)
    plot_early_stop_accuracy(results, ax=accuracy)
    stamp(fig, results.experiment, scale, levels_done=results.levels_done, precision=results.precision)
    return fig


def legend_above(ax: Axes, title: str | None = None, ncols: int | None = None) -> Legend:
    """`ax`'s legend, outside the axes just above them, so that it covers no data: in
    `ncols` columns, else in the fewest rows that fit `ax`'s column of the figure, under
    `title`. Lay the figure out afterwards (`stamp` does) to make room for it."""
    handles, labels = ax.get_legend_handles_labels()
    width = _legend_room(ax)
    for rows in range(1, len(labels) + 1):
        legend = ax.legend(
            handles,
            labels,
            title=title,
            ncols=ncols or math.ceil(len(labels) / rows),
            loc="lower center",
            bbox_to_anchor=(0.5, 1.01),
            fontsize="small",
            title_fontsize="small",
            frameon=False,
        )
        if ncols or legend.get_window_extent().width <= width:
            break
    return legend


def _legend_room(ax: Axes) -> float:
    """The width (pixels) a legend above `ax` may take without reaching its neighbours':
    most of `ax`'s columns of the figure's grid (which the layout's margins come out of),
    else the axes' own width."""
    spec = ax.get_subplotspec()
    if spec is None:
        return ax.get_window_extent().width
    ratios = spec.get_gridspec().get_width_ratios()
    share = sum(ratios[column] for column in spec.colspan) / sum(ratios)
    return 0.9 * share * ax.get_figure().bbox.width


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> list[Path]:
    """Write `fig` as `path`.png (at `dpi`) and `path`.svg, creating the folder; a
    .png/.svg suffix on `path` is dropped. Metadata that changes between runs (dates,
    random ids) is left out, so saving the same figure again gives identical files."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".svg"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    png, svg = path.with_name(path.name + ".png"), path.with_name(path.name + ".svg")
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    with plt.rc_context({"svg.hashsalt": "lth_lib"}):
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    return [png, svg]


def default_levels(rounds: int, count: int = 5) -> list[int]:
    """About `count` levels spread evenly over 0..rounds (always 0 and the last)."""
    return sorted({round(x) for x in np.linspace(0, rounds, min(count, rounds + 1))})


def level_stats(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, min and max of `metric` per kind and level (over trials and control networks),
    with the mean percent of weights remaining. Controls, which are not trained at level 0,
    get the dense network's row there, so every line starts at 100%."""
    dense = table[(table.level == 0) & (table.kind == "ticket")]
    frames = [table] + [dense.assign(kind=k) for k in table.kind.unique() if k != "ticket"]
    table = pd.concat(frames, ignore_index=True)
    grouped = table.groupby(["kind", "level"])
    stats = grouped[metric].agg(["mean", "min", "max"])
    stats["percent"] = grouped["percent_remaining"].mean()
    return stats.reset_index()


def _plot_by_level(
    results: Results, metric: str, ax: Axes | None, label: str | None, colors: Mapping[str, str] | None
) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2))
    stats = level_stats(results.table(), metric)
    kinds = [k for k in KIND_NAMES if k in set(stats.kind)] + sorted(set(stats.kind) - set(KIND_NAMES))
    offset = len(ax.containers)  # a second call on the same axes continues the colour cycle
    for i, kind in enumerate(kinds):
        rows = stats[stats.kind == kind].sort_values("level")
        name = KIND_NAMES.get(kind, kind)
        color = (colors or {}).get(kind, f"C{(offset + i) % 10}")
        yerr = np.vstack([rows["mean"] - rows["min"], rows["max"] - rows["mean"]])
        ax.errorbar(
            rows["percent"],
            rows["mean"],
            yerr=yerr,
            color=color,
            linestyle="-" if kind == "ticket" else "--",
            marker="o",
            markersize=3,
            linewidth=1.4,
            capsize=2.5,
            elinewidth=0.9,
            label=f"{label} {name}" if label else name,
        )
    _percent_axis(ax)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    legend_above(ax)
    ax.grid(alpha=0.3)
    return ax


def _percent_axis(ax: Axes, max_ticks: int = 8) -> None:
    """Log-scaled percent axis running from 100 at the left down to the sparsest level,
    ticked at the levels plotted on `ax` (thinned so labels do not collide), so overlaid
    plots share one set of ticks."""
    xs = np.concatenate([np.asarray(line.get_xdata(), dtype=float) for line in ax.lines])
    values = sorted(set(np.round(xs[xs > 0], 6)), reverse=True)
    ax.set_xscale("log")
    stride = -(-len(values) // max_ticks)
    chosen = list(range(0, len(values), stride))
    if chosen[-1] != len(values) - 1:  # always tick the sparsest level
        if len(values) - 1 - chosen[-1] < stride / 2 and len(chosen) > 1:
            chosen.pop()
        chosen.append(len(values) - 1)
    ticks = [values[i] for i in chosen]
    high, low = values[0], values[-1]
    spread = np.log10(high / low) if high > low else 1.0
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: percent_label(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    pad = 10 ** (spread * 0.04)
    ax.set_xlim(high * pad, low / pad)  # inverted: dense on the left
    ax.set_xlabel(PERCENT_LABEL)


def percent_label(value: float) -> str:
    """100 -> "100", 51.27 -> "51.3", 0.46 -> "0.46"."""
    if value >= 99.95:
        return "100"
    return f"{value:.1f}" if value >= 0.95 else f"{value:.2g}"


def strategy_figure(results: Mapping[str, Results], scale: str | None = None) -> Figure:
    """Tickets found by different strategies (e.g. {"iterative": ..., "one-shot": ...})
    side by side: early-stop iteration and accuracy against weights remaining."""
    fig, (iterations, accuracy) = plt.subplots(1, 2, figsize=(11, 4.8))
    for i, (name, result) in enumerate(results.items()):
        tickets = _tickets_only(result)
        plot_early_stop_iteration(tickets, ax=iterations, label=name, colors={"ticket": f"C{i}"})
        plot_early_stop_accuracy(tickets, ax=accuracy, label=name, colors={"ticket": f"C{i}"})
    # only the tickets are drawn, so the caption names the strategies and no controls
    first = next(iter(results.values())).experiment
    done = min(r.levels_done for r in results.values())
    stamp(fig, dataclasses.replace(first, controls=()), scale, strategy=" vs ".join(results), levels_done=done,
          precision=joined_precision(r.precision for r in results.values()))  # fmt: skip
    return fig


def deeper_figure(results: Mapping[str, Results], scale: str | None = None) -> Figure:
    """Section 4's figure for one network: per training (e.g. {"no warm-up": ...,
    "warm-up": ..., "late rewinding": ...}, each in its own colour) winning tickets and
    their random reinitialisations (dashed), test accuracy at the end of training and at
    early stop against weights remaining. The caption names each training's learning
    rate, warm-up and rewind iteration."""
    fig, (final, early) = plt.subplots(1, 2, figsize=(12, 5.2))
    for i, (name, result) in enumerate(results.items()):
        colors = {kind: f"C{i}" for kind in ("ticket", *result.experiment.controls)}
        plot_early_stop_accuracy(result, ax=final, label=name, metric="final_test_acc", colors=colors)
        plot_early_stop_accuracy(result, ax=early, label=name, colors=colors)
    trainings = " vs ".join(f"{name} ({training_text(r.experiment)})" for name, r in results.items())
    first = next(iter(results.values())).experiment
    done = min(r.levels_done for r in results.values())
    stamp(fig, dataclasses.replace(first, pruning=dataclasses.replace(first.pruning, rewind_iteration=0)), scale,
          strategy=f"{STRATEGY_NAMES[first.pruning.strategy]}: {trainings}", levels_done=done,
          precision=joined_precision(r.precision for r in results.values()))  # fmt: skip
    return fig


def training_text(exp: Experiment) -> str:
    """A training's learning rate, warm-up and rewind iteration in a few words, e.g.
    "lr 0.03, warm-up 20,000" or "lr 0.1, k = 3,000"."""
    parts = [f"lr {exp.training.lr:g}"]
    if exp.training.warmup:
        parts.append(f"warm-up {exp.training.warmup:,}")
    if exp.pruning.rewind_iteration:
        parts.append(f"k = {exp.pruning.rewind_iteration:,}")
    return ", ".join(parts)


def controls_figure(results: Results, scale: str | None = None) -> Figure:
    """Winning tickets against their controls (dashed): early-stop iteration and accuracy
    against weights remaining, and test accuracy over training at the level nearest 21%."""
    fig, (iterations, accuracy, curves) = plt.subplots(1, 3, figsize=(15, 4.8))
    plot_early_stop_iteration(results, ax=iterations)
    plot_early_stop_accuracy(results, ax=accuracy)
    level = results.level_near(21.1)
    settled = []
    curves_at_level = results.curves().query("level == @level")
    for i, kind in enumerate(("ticket",) + results.experiment.controls):
        rows = curves_at_level[curves_at_level.kind == kind].dropna(subset=["test_acc"])
        stats = rows.groupby("iteration")["test_acc"].agg(["mean", "min", "max"])
        settled.append(stats)
        style = "-" if kind == "ticket" else "--"
        curves.plot(
            stats.index, stats["mean"], color=f"C{i}", linestyle=style, label=KIND_NAMES.get(kind, kind)
        )
        curves.fill_between(stats.index, stats["min"], stats["max"], color=f"C{i}", alpha=0.15, linewidth=0)
    _zoom(curves, settled)
    curves.xaxis.set_major_locator(_integer_locator())
    curves.set_xlabel("Training iterations")
    curves.set_ylabel(METRIC_LABELS["test_acc"])
    legend_above(curves, title=f"{percent_label(results.percent_remaining(level))}% of weights remaining")
    curves.grid(alpha=0.3)
    stamp(fig, results.experiment, scale, levels_done=results.levels_done, precision=results.precision)
    return fig


def travel_figure(travel: pd.DataFrame, results: Results, level: int, scale: str | None = None) -> Figure:
    """How far each weight of the dense network moved in training, winning-ticket weights
    against pruned ones (`travel`: `weight_travel(results, level)`): a row per layer, the
    distribution of |theta_T - theta_0| beside that of the change in magnitude
    |theta_T| - |theta_0|, trials pooled. Every weight is drawn: the bins span each
    layer's whole range, and the log density axis reaches below a single weight's bin."""
    layers = list(travel.layer.unique())
    trials = travel.trial.nunique()
    percent = percent_label(results.percent_remaining(level))
    fig = plt.figure(figsize=(11, 1.2 + 2.4 * len(layers)), layout="constrained")
    for row, layer in zip(np.atleast_1d(fig.subfigures(len(layers), 1)), layers):
        weights = travel[travel.layer == layer]
        row.suptitle(
            f"{layer}: {len(weights) // trials:,} weights per trial, "
            f"{100 * weights.in_ticket.mean():.1f}% of them in the ticket",
            fontsize="medium",
        )
        for ax, (column, xlabel) in zip(row.subplots(1, 2), TRAVEL_COLUMNS.items()):
            values = weights[column].to_numpy()
            bins = np.histogram_bin_edges(values, min(100, math.isqrt(len(values))))
            lowest = np.inf  # the smallest density drawn: one weight in the emptiest bin
            for in_ticket, color, name in (
                (True, "C0", f"in the {percent}% ticket"),
                (False, "C3", "pruned"),
            ):
                group = weights.loc[weights.in_ticket == in_ticket, column]
                density, *_ = ax.hist(group, bins=bins, density=True, histtype="step", color=color,
                                      linewidth=1.3, label=name)  # fmt: skip
                lowest = min(lowest, density[density > 0].min(initial=np.inf))
            ax.set_yscale("log")
            ax.set_ylim(bottom=lowest / 3)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density (log scale)")
            ax.grid(alpha=0.3)
    pooled = f"{trials} trial{'s' if trials != 1 else ''} pooled"
    fig.legend(
        *ax.get_legend_handles_labels(),
        title=f"The dense network's weights, trained from $\\theta_0$ to $\\theta_T$: those in the "
        f"{percent}% ticket (round {level}) vs those pruned · {pooled} · every weight shown",
        title_fontsize="medium",
        loc="outside upper center",
        ncols=2,
        frameon=False,
    )
    stamp(fig, results.experiment, scale, levels_done=results.levels_done, precision=results.precision)
    return fig


def stability_figure(points: Sequence[Stability], results: Results, scale: str | None = None) -> Figure:
    """Stability to SGD noise against the rewind iteration k: the test error along the line
    between two copies trained from the weights at k (one line per k; the dense network
    solid, the ticket dashed), and the instability (the error barrier) against k, with the
    2% under which Frankle et al. (2020) call a network stable. `results`: one of the
    rewound experiments, for the caption (trial 0's copies, no controls)."""
    fig, (lines, barrier) = plt.subplots(1, 2, figsize=(11, 4.8))
    ks = sorted({p.rewind_iteration for p in points})
    for kind, style in (("dense", "-"), ("ticket", "--")):
        chosen = sorted(
            (p for p in points if (p.level == 0) == (kind == "dense")), key=lambda p: p.rewind_iteration
        )
        if not chosen:
            continue
        name = (
            "dense (100%)" if kind == "dense" else f"ticket ({percent_label(chosen[0].percent_remaining)}%)"
        )
        for p in chosen:
            alphas = np.linspace(0, 1, len(p.errors))
            color = f"C{ks.index(p.rewind_iteration)}"
            lines.plot(alphas, 100 * np.asarray(p.errors), color=color, linestyle=style, linewidth=1.3,
                       label=f"{name}, k = {p.rewind_iteration:,}")  # fmt: skip
        barrier.plot([p.rewind_iteration for p in chosen], [100 * p.instability for p in chosen], style,
                     marker="o", color="0.2" if kind == "dense" else "C3", label=name)  # fmt: skip
    barrier.axhline(100 * STABLE_BELOW, color="0.6", linewidth=0.9, linestyle=":", label="stable below 2%")
    lines.set_xlabel(r"interpolation $\alpha$: $(1-\alpha) W_1 + \alpha W_2$")
    lines.set_ylabel("Test error (%)")
    legend_above(lines, ncols=len({p.level == 0 for p in points}))  # a column each: dense, ticket
    barrier.set_xlabel("Rewind iteration k")
    barrier.set_ylabel("Instability: error barrier (points)")
    barrier.xaxis.set_major_locator(FixedLocator(ks))
    legend_above(barrier)
    for ax in (lines, barrier):
        ax.grid(alpha=0.3)
    ks_text = ", ".join(f"{k:,}" for k in ks)
    # the copies are trial 0's, without controls
    shown = dataclasses.replace(
        results.experiment,
        trials=1,
        controls=(),
        pruning=dataclasses.replace(results.experiment.pruning, rewind_iteration=0),
    )
    stamp(fig, shown, scale, strategy=f"iterative, rewound to k = {ks_text}, 2 copies per k",
          precision=joined_precision([results.precision, *(p.trained.get("precision", "float32") for p in points)]))  # fmt: skip
    return fig


def _integer_locator() -> MaxNLocator:
    """Matplotlib's default tick choice, never between two integers (iteration axes)."""
    return MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=1)


def _zoom(ax: Axes, lines: list[pd.DataFrame]) -> None:
    """Zoom an accuracy axis in on where curves differ, as the paper's figures do: from
    the lowest value once the first tenth of training is over (the low start is cut
    off) to the highest value of any line at any time (nothing is cut off at the top)."""
    low = min(s.loc[s.index >= s.index.max() / 10, "min"].min() for s in lines)
    high = max(s["max"].max() for s in lines)
    pad = 0.08 * (high - low) or 0.01
    ax.set_ylim(low - pad, min(1.0, high + pad))


def _tickets_only(results: Results) -> Results:
    """`results` without its control networks."""
    records = [r for r in results.records if r.kind == "ticket"]
    return dataclasses.replace(results, records=records)
