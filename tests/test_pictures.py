"""Pictures of the masks: the maps, the per-layer table, the figures and the round slider."""

import matplotlib
import numpy as np
import pytest

from lth_lib.lottery import run
from lth_lib.pictures import first_layer_map, layer_remaining, mask_figure, mask_grid_figure, mask_slider
from lth_lib.protocol import paper_experiment
from lth_lib.pruning import dense_mask

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lenet(synthetic):
    exp = paper_experiment("lenet300", iterations=20, eval_every=10, eval_examples=200, rounds=3, trials=2)
    return run(exp, synthetic, results_store=False, progress=False)


def test_lenet_map_shades_each_pixel_by_the_fraction_of_its_weights_kept():
    mask = dense_mask("lenet300")
    mask["fc1"][:150, 0] = False  # pixel (0, 0) keeps half its 300 weights
    mask["fc1"][:, 28] = False  # pixel (1, 0) keeps none
    image = first_layer_map(mask)
    assert image.shape == (28, 28)
    assert image[0, 0] == 0.5 and image[1, 0] == 0.0 and image[0, 1] == 1.0


def test_conv_map_tiles_the_filters_with_blank_lines_between():
    mask = dense_mask("conv2")
    mask["conv1"][9, :2, 1, 2] = False  # filter 9 (row 1, column 1): position (1, 2) keeps 1 of 3 channels
    image = first_layer_map(mask)
    assert image.shape == (31, 31)  # 8 x 8 tiles of 3 x 3, one blank line between
    assert np.isnan(image[3, :]).all() and np.isnan(image[:, 3]).all()
    assert image[4 + 1, 4 + 2] == pytest.approx(1 / 3)
    assert np.nansum(image) == pytest.approx(64 * 9 - 2 / 3)


def test_layer_remaining_counts_each_layers_kept_weights(lenet):
    remaining = layer_remaining(lenet, trial=1)
    assert sorted(remaining.level.unique()) == [0, 1, 2, 3]
    for level in range(4):
        rows = remaining[remaining.level == level].set_index("layer")
        mask = lenet.masks[level][1]
        assert rows.kept.to_dict() == {name: int(kept.sum()) for name, kept in mask.items()}
    assert remaining.query("level == 3 and layer == 'fc1'").kept.item() == round(235_200 * 0.8**3)
    with pytest.raises(ValueError, match="trial must be in 0..1"):
        layer_remaining(lenet, trial=2)


def test_figures_draw_every_round_and_refuse_a_missing_level(lenet):
    grid = mask_grid_figure(lenet, scale="smoke")
    maps = [ax for ax in grid.get_axes() if ax.images]
    assert [ax.get_title() for ax in maps] == [
        "round 0: 100%",
        "round 1: 80.0%",
        "round 2: 64.1%",
        "round 3: 51.3%",
    ]
    assert "scale smoke" in grid.texts[-1].get_text()
    one = mask_figure(lenet, 2)
    mask = lenet.masks[2][0]
    relative = first_layer_map(mask) / float(mask["fc1"].float().mean())  # 1: as often as the layer
    assert np.array_equal(one.axes[0].images[0].get_array(), relative)
    with pytest.raises(ValueError, match="level must be one of"):
        mask_figure(lenet, 4)


def test_the_round_slider_redraws_the_figure_of_the_round_it_selects(lenet, monkeypatch):
    pytest.importorskip("ipywidgets")
    drawn = []
    draw = mask_figure
    monkeypatch.setattr("lth_lib.pictures.mask_figure", lambda results, level, *args: drawn.append(level) or draw(
        results, level, *args))  # fmt: skip
    slider, _ = mask_slider(lenet).children
    assert (slider.description, slider.min, slider.max, slider.value) == ("round", 0, 3, 0)
    slider.value = 2
    assert drawn == [
        0,
        2,
    ]  # shown at once, then redrawn for the round selected (tests/test_jupyterlab.py: in a browser)
