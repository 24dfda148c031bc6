import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from lth_lib.lottery import run
from lth_lib.pictures import mask_figure, mask_grid_figure
from lth_lib.plots import (
    _zoom,
    controls_figure,
    default_levels,
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
from lth_lib.protocol import paper_experiment
from lth_lib.stability import Stability
from lth_lib.travel import weight_travel

TINY = {"iterations": 20, "eval_every": 10, "eval_examples": 200, "rounds": 3, "trials": 2}


@pytest.fixture(scope="module")
def results(synthetic):
    exp = paper_experiment("lenet300", controls=("reinit", "random_prune"), **TINY)
    return run(exp, synthetic, results_store=False, progress=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_scale_caption_names_the_run():
    exp = paper_experiment(
        "lenet300", iterations=1000, rounds=3, trials=2, controls=("reinit", "random_prune"), control_trials=3
    )
    assert scale_caption(exp, "cpu") == (
        "lenet300 · iterative · 1,000 iterations · 3 rounds · 2 trials (+3 reinit, +3 random_prune per ticket)"
        " · scale cpu"
    )
    one = paper_experiment("lenet300", iterations=50, rounds=1, strategy="oneshot", data_copy="mnist-x")
    assert scale_caption(one) == "lenet300 · one-shot · 50 iterations · 1 round · 1 trial · data mnist-x"


def test_every_plot_renders_to_png(results, tmp_path):
    for i, plot in enumerate([plot_early_stop_accuracy, plot_early_stop_iteration, plot_training_curves]):
        ax = plot(results)
        ax.figure.savefig(tmp_path / f"{i}.png")
    paper_figure(results, scale="test").savefig(tmp_path / "paper.png")
    plot_training_curves(results, kind="reinit").figure.savefig(tmp_path / "reinit.png")
    assert all(
        (tmp_path / f"{name}.png").stat().st_size > 1000 for name in ("0", "1", "2", "paper", "reinit")
    )


@pytest.mark.parametrize("plot", [plot_early_stop_accuracy, plot_early_stop_iteration])
def test_level_plots_have_inverted_log_percent_axis_and_min_max_error_bars(results, plot):
    ax = plot(results)
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > right and left >= 100 and right <= results.table().percent_remaining.min()
    assert ax.get_xlabel() == "Percent of weights remaining" and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "100" and "80.0" in labels  # ticks at the levels themselves
    bars = _errorbars(ax)
    assert len(bars) == 3  # ticket, reinit, random pruning
    for bar in bars:
        segments = bar.lines[2][0].get_segments()
        assert len(segments) == 4  # one per level, the controls joined at the dense point
    heights = [abs(s[1][1] - s[0][1]) for bar in bars for s in bar.lines[2][0].get_segments()]
    assert max(heights) > 0  # trials disagree somewhere: min/max spans are drawn


def test_accuracy_plot_styles_and_labels_tickets_and_controls(results):
    ax = plot_early_stop_accuracy(results)
    styles = {bar.get_label(): bar.lines[0].get_linestyle() for bar in _errorbars(ax)}
    assert styles == {"winning ticket": "-", "random reinit": "--", "random pruning": "--"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(styles)
    colors = {bar.lines[0].get_color() for bar in _errorbars(ax)}
    assert len(colors) == 3


def test_accuracy_plot_means_over_trials(results):
    ax = plot_early_stop_accuracy(results)
    table = results.table()
    tickets = table[table.kind == "ticket"].groupby("level").early_stop_test_acc.mean()
    line = _errorbars(ax)[0].lines[0]
    assert list(line.get_ydata()) == pytest.approx(list(tickets))


def test_overlay_prefixes_labels_and_changes_colours(results):
    ax = plot_early_stop_accuracy(results, label="iterative")
    plot_early_stop_accuracy(results, ax=ax, label="one-shot", metric="final_test_acc")
    bars = _errorbars(ax)
    assert [b.get_label() for b in bars][::3] == ["iterative winning ticket", "one-shot winning ticket"]
    assert len({b.lines[0].get_color() for b in bars}) == 6
    ax = plot_early_stop_accuracy(results, colors={"ticket": "black"})
    assert _errorbars(ax)[0].lines[0].get_color() == "black"


def test_training_curves_one_line_per_level(results):
    levels = default_levels(results.experiment.pruning.rounds)
    assert levels[0] == 0 and levels[-1] == 3
    ax = plot_training_curves(results)
    assert len(ax.lines) == len(levels)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["100", "80.0", "64.1", "51.3"]
    assert len(ax.collections) == len(levels)  # a min-max band per line
    assert ax.get_xlabel() == "Training iterations" and ax.get_ylabel() == "Test accuracy"
    ax = plot_training_curves(results, levels=[0, 2], kind="random_prune")
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]  # dense, then the control
    with pytest.raises(ValueError, match="level 7"):
        plot_training_curves(results, levels=[7])


def test_paper_figure_is_stamped_with_the_caption(results):
    fig = paper_figure(results, scale="test")
    assert len(fig.axes) == 3
    [text] = fig.texts
    caption = text.get_text()
    assert caption == scale_caption(results.experiment, "test")
    assert "20 iterations" in caption and "3 rounds" in caption and "2 trials" in caption
    stamp(fig, results.experiment, "again")  # replaces, not adds
    assert [t.get_text() for t in fig.texts] == [scale_caption(results.experiment, "again")]
    assert min(ax.get_position().y0 for ax in fig.axes) > text.get_position()[1]


def test_save_figure_writes_png_and_reproducible_svg(results, tmp_path):
    fig = paper_figure(results)
    first = save_figure(fig, tmp_path / "out" / "figure")
    assert first == [tmp_path / "out" / "figure.png", tmp_path / "out" / "figure.svg"]
    assert first[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg, png = first[1].read_bytes(), first[0].read_bytes()
    assert b"<dc:date>" not in svg
    second = save_figure(fig, tmp_path / "out" / "figure.svg")
    assert second == first
    assert first[1].read_bytes() == svg and first[0].read_bytes() == png
    again = paper_figure(results)
    save_figure(again, tmp_path / "again")
    assert (tmp_path / "again.svg").read_bytes() == svg


def test_percent_ticks_are_thinned_levels_ending_at_the_sparsest():
    from lth_lib.plots import _percent_axis

    lenet = [(265_200 * 0.8**k + 1_000 * 0.9**k) / 266_200 * 100 for k in range(21)]
    _, ax = plt.subplots()
    ax.plot(lenet, lenet)
    _percent_axis(ax)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["100", "51.3", "26.3", "13.5", "7.0", "3.6", "1.9", "1.2"]  # the paper's digits


def test_strategy_figure_caption_names_both_strategies_and_no_controls(results):
    fig = strategy_figure({"iterative": results, "one-shot": results}, scale="test")
    [text] = fig.texts
    assert text.get_text() == (
        "lenet300 · iterative vs one-shot · 20 iterations · 3 rounds · 2 trials · data synthetic · scale test"
    )


def test_a_short_run_has_whole_iteration_ticks_and_no_curve_cut_off(synthetic):
    exp = paper_experiment(
        "lenet300", iterations=4, eval_every=2, eval_examples=60, rounds=1, controls=("reinit",)
    )
    fig = paper_figure(run(exp, synthetic, results_store=False, progress=False), scale="smoke")
    fig.canvas.draw()
    curves, iterations, _ = fig.axes
    for ticks in (curves.get_xticks(), iterations.get_yticks()):
        assert all(float(t).is_integer() for t in ticks), ticks
    # the zoom cuts off a line's low start, never a point above the rest (a short run's first one)
    ax = plt.figure().gca()
    rising = pd.DataFrame(
        {"min": [0.05, 0.20, 0.22, 0.25], "max": [0.05, 0.21, 0.24, 0.26]}, index=[0, 100, 200, 300]
    )
    falling = pd.DataFrame(
        {"min": [0.35, 0.24, 0.22, 0.21], "max": [0.35, 0.25, 0.23, 0.22]}, index=[0, 100, 200, 300]
    )
    _zoom(ax, [rising, falling])
    low, high = ax.get_ylim()
    assert 0.05 < low < 0.20 and high > 0.35


def _figures(results):
    level = results.level_near(60)
    points = [
        Stability(k, at, percent, [0.1 + 0.02 * (k == 0) * (i in (9, 10)) for i in range(20)])
        for k in (0, 5)
        for at, percent in ((0, 100.0), (level, results.percent_remaining(level)))
    ]
    return {
        "paper": paper_figure(results, scale="test"),
        "strategy": strategy_figure({"iterative": results, "one-shot": results}, scale="test"),
        "controls": controls_figure(results, scale="test"),
        "travel": travel_figure(weight_travel(results, level), results, level, scale="test"),
        "stability": stability_figure(points, results, scale="test"),
        "masks": mask_grid_figure(results, scale="test"),
        "mask": mask_figure(results, level, scale="test"),
    }


def test_no_legend_covers_an_axes_and_every_figure_keeps_its_stamp(results):
    for name, fig in _figures(results).items():
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent()
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent()), (name, ax.get_title(), legend.get_title())
        assert any(t.get_gid() == "lth-stamp" for t in fig.texts), name


def test_travel_figure_draws_every_weight_per_layer_with_a_caption(results):
    level = results.level_near(60)
    travel = weight_travel(results, level)
    fig = travel_figure(travel, results, level, scale="test")
    layers = ["fc1", "fc2", "fc3"]
    assert [row.texts[0].get_text().split(":")[0] for row in fig.subfigs] == layers
    panels = [(layer, column) for layer in layers for column in ("travel", "magnitude_change")]
    assert len(fig.axes) == len(panels)
    for ax, (layer, column) in zip(fig.axes, panels):
        weights = travel[travel.layer == layer]
        assert len(ax.patches) == 2 and ax.get_yscale() == "log"  # ticket and pruned, overlaid
        for patch, in_ticket in zip(ax.patches, (True, False)):
            edges = patch.get_xy()[:, 0]
            values = weights.loc[weights.in_ticket == in_ticket, column]
            assert edges.min() <= values.min() and edges.max() >= values.max()  # no tail cut off
    [legend] = fig.legends
    caption = legend.get_title().get_text()
    percent = f"{results.percent_remaining(level):.1f}%"
    assert f"{percent} ticket (round {level})" in caption and "2 trials pooled" in caption
    assert [t.get_text() for t in legend.get_texts()] == [f"in the {percent} ticket", "pruned"]
    assert [t.get_text() for t in fig.texts] == [scale_caption(results.experiment, "test")]
