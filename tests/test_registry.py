"""A network of one's own is one entry of `NETWORKS`: built, trained, pruned, exported and
drawn from that entry alone, everything else read off the module built from it."""

import matplotlib
import pytest
import torch
from torch import nn

from lth_lib.data import Dataset
from lth_lib.export import export_ticket
from lth_lib.lottery import run
from lth_lib.models import Network, count_prunable, multiply_adds, parameter_shapes, plain_network
from lth_lib.pictures import first_layer_map, mask_figure, mask_grid_figure
from lth_lib.protocol import (
    CONTROLS,
    NETWORKS,
    Architecture,
    Conv,
    Dense,
    NetworkProtocol,
    Pool,
    scaled_experiment,
)
from lth_lib.pruning import pruning_schedule
from lth_lib.results import trained_text

matplotlib.use("Agg")

SMOKE = {"eval_every": 10, "eval_examples": 200, "rounds": 2, "trials": 2, "control_trials": 1}
TOY = NetworkProtocol(
    architecture=Architecture(dataset="mnist", input_shape=(784,), layers=(Dense(64), Dense(10))),
    iterations=1000, lr=1e-3, scales={"smoke": dict(iterations=30, **SMOKE)},
)  # fmt: skip
# Another kernel size, another pool, two pools between convolutions: none of it in the paper's networks.
TOY_CONV = NetworkProtocol(
    architecture=Architecture(
        dataset="cifar10", input_shape=(3, 32, 32), layers=(Conv(8, kernel=5), Pool(4), Conv(16), Pool(), Dense(32), Dense(10))
    ),
    iterations=1000, lr=1e-3, conv_rate=0.2, scales={"smoke": dict(iterations=6, **{**SMOKE, "eval_every": 3, "rounds": 1, "trials": 1})},
)  # fmt: skip


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(NETWORKS, "toy", TOY)
    monkeypatch.setitem(NETWORKS, "toyconv", TOY_CONV)


def cifar_like() -> Dataset:
    """CIFAR-shaped random images whose label is a linear function of the pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5400, 3, 32, 32, generator=g)
    labels = (x.flatten(1) @ torch.randn(3 * 32 * 32, 10, generator=g)).argmax(1)
    return Dataset("cifar10", "synthetic", x[:5300], labels[:5300], x[5300:], labels[5300:])


def test_a_network_is_one_entry_and_runs_at_smoke(registered, synthetic):
    exp = scaled_experiment("toy", "smoke", controls=CONTROLS)
    assert exp.rates == {"fc1": 0.2, "fc2": 0.1}  # the output layer at half the fc rate, as the paper's
    assert count_prunable("toy") == {"fc1": 784 * 64, "fc2": 64 * 10}
    assert multiply_adds("toy") == 784 * 64 + 64 * 10
    assert "    2     32,113        518     32,631   64.21%" in pruning_schedule(exp)
    results = run(exp, synthetic, results_store=False, progress=False)
    assert trained_text(results).splitlines()[1:] == [
        "ticket           0    100.00%    2        0-30            4",
        "ticket           1     80.13%    2        0-30            4",
        "reinit           1     80.13%    2        0-30            4",
        "random_prune     1     80.13%    2        0-30            4",
        "ticket           2     64.21%    2        0-30            4",
        "reinit           2     64.21%    2        0-30            4",
        "random_prune     2     64.21%    2        0-30            4",
    ]
    assert all(
        r.final_test_acc > 0.2 for r in results.records if r.kind == "ticket"
    )  # it learns (chance: 0.1)
    ticket = export_ticket(results, level=2, trial=1)
    assert (
        str(ticket)
        == str(plain_network("toy"))
        == str(nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)))
    )
    assert first_layer_map(results.masks[2][0]).shape == (28, 28)
    mask_grid_figure(results, scale="smoke")


def test_a_convolutional_network_of_other_kernels_and_pools_is_one_entry(registered):
    shapes = parameter_shapes("toyconv")
    assert shapes["layers.conv1.weight"] == (8, 3, 5, 5) and shapes["layers.conv2.weight"] == (16, 8, 3, 3)
    assert shapes["layers.fc1.weight"] == (32, 16 * 4 * 4)  # 32 -> pool 4 -> 8 -> pool 2 -> 4
    assert multiply_adds("toyconv") == 3 * 25 * 8 * 32 * 32 + 8 * 9 * 16 * 8 * 8 + 256 * 32 + 32 * 10
    exp = scaled_experiment("toyconv", "smoke", controls=("reinit",))
    assert exp.rates == {"conv1": 0.2, "conv2": 0.2, "fc1": 0.2, "fc2": 0.1}
    data = cifar_like()
    results = run(exp, data, results_store=False, progress=False)
    assert [(r.kind, r.level) for r in results.records] == [("ticket", 0), ("ticket", 1), ("reinit", 1)]
    ticket = export_ticket(results, level=1)
    kinds = [type(m).__name__ for m in ticket]
    assert kinds == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert ticket[0].kernel_size == (5, 5) and ticket[0].padding == (2, 2) and ticket[2].kernel_size == 4
    stacked = Network("toyconv")  # the export computes what lth_lib's own network computes
    stacked.load_members([{k: v * results.masks[1][0][k.split(".")[1]] if k.endswith("weight") else v
                           for k, v in results.rewind_weights[0].items()}])  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(
            ticket(data.test_x[:20]), stacked(data.test_x[:20])[0], rtol=1e-5, atol=1e-5
        )
    assert first_layer_map(results.masks[1][0]).shape == (
        5,
        47,
    )  # 8 tiles of 5 x 5 in a row, blank lines between
    fig = mask_figure(results, level=1, scale="smoke")
    assert "conv1's 8 filters, 5x5 positions, round 1" in [ax.get_title() for ax in fig.axes]


def test_an_architecture_that_cannot_be_built_and_a_scale_not_given_are_refused(registered):
    with pytest.raises(ValueError, match="ends with fully connected"):
        Architecture(dataset="mnist", input_shape=(784,), layers=(Dense(10), Conv(4)))
    with pytest.raises(ValueError, match="odd kernel"):
        Architecture(dataset="cifar10", input_shape=(3, 32, 32), layers=(Conv(4, kernel=4), Dense(10)))
    with pytest.raises(ValueError, match="'toy' has no settings for scale 'cpu'"):
        scaled_experiment("toy", "cpu")
