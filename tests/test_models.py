import pytest
import torch
from helpers import initialized_network

from lth_lib.models import Dropout, Network, count_prunable, glorot_init, multiply_adds, parameter_shapes

# Prunable weights per network: PAPER.md's Figure 2 table, checked by arithmetic on the
# layer list (3x3 'same' convs, 2x2 max pools, 32x32x3 CIFAR input, 784 MNIST input).
EXACT = {"lenet300": 266_200, "conv2": 4_300_992, "conv4": 2_425_024, "conv6": 2_261_184}
CONV = {"conv2": 38_592, "conv4": 259_776, "conv6": 1_144_512}  # the paper: 38K, 260K, 1.1M
PAPER_ROUNDED = {"lenet300": "266K", "conv2": "4.3M", "conv4": "2.4M"}  # conv6: see README


@pytest.mark.parametrize("name", EXACT)
def test_prunable_counts_match_the_paper_table(name):
    counts = count_prunable(name)
    assert sum(counts.values()) == EXACT[name]
    if name in CONV:
        assert sum(v for k, v in counts.items() if k.startswith("conv")) == CONV[name]
    if name in PAPER_ROUNDED:
        total = EXACT[name]
        shown = f"{total / 1e3:.0f}K" if total < 1e6 else f"{total / 1e6:.1f}M"
        assert shown == PAPER_ROUNDED[name]


def test_layer_shapes_lenet():
    net = Network("lenet300")
    assert {k: tuple(v.shape) for k, v in net.prunable().items()} == {
        "fc1": (1, 300, 784),
        "fc2": (1, 100, 300),
        "fc3": (1, 10, 100),
    }
    assert net.arch.weight_layers[-1] == "fc3"


@pytest.mark.parametrize("name", EXACT)
def test_shapes_are_read_off_the_network(name):
    assert parameter_shapes(name) == {k: p.shape[1:] for k, p in Network(name).named_parameters()}


# Forward multiply-adds of one example, by arithmetic on the layer list (conv: Cin*9*Cout*H*W).
MULTIPLY_ADDS = {
    "lenet300": 784 * 300 + 300 * 100 + 100 * 10,
    "conv2": 3 * 9 * 64 * 32 * 32 + 64 * 9 * 64 * 32 * 32 + 16 * 16 * 64 * 256 + 256 * 256 + 256 * 10,
}


@pytest.mark.parametrize("name", MULTIPLY_ADDS)
def test_multiply_adds_are_counted_on_the_network(name):
    assert multiply_adds(name) == MULTIPLY_ADDS[name]


def test_dropout_masks_come_from_each_members_seed_and_the_step():
    step = torch.zeros((), dtype=torch.float32)
    x = torch.ones(3, 60, 256)
    stacked = Dropout(0.5, [7, 8, 7], step)(0, x)
    alone = Dropout(0.5, [8], step)(0, x[:1])
    assert torch.equal(stacked[1], alone[0]) and torch.equal(stacked[0], stacked[2])
    assert not torch.equal(stacked[0], stacked[1])
    assert (
        set(stacked.unique().tolist()) == {0.0, 2.0}
        and abs((stacked == 0).float().mean().item() - 0.5) < 0.01
    )
    assert not torch.equal(Dropout(0.5, [8], step)(1, x[:1]), alone)  # another layer
    step += 1
    assert not torch.equal(Dropout(0.5, [8], step)(0, x[:1]), alone)  # the next step


def test_unknown_network_lists_known_ones():
    with pytest.raises(
        ValueError, match="unknown network 'lenet5'.*conv2, conv4, conv6, lenet300, resnet20, vgg19"
    ):
        Network("lenet5")


@pytest.mark.parametrize(
    "name,shape", [("lenet300", (7, 784)), ("conv2", (3, 3, 32, 32)), ("conv6", (2, 3, 32, 32))]
)
def test_forward_shapes(name, shape):
    net = initialized_network(name, seeds=[0, 1])
    x = torch.rand(shape)
    assert net(x).shape == (2, shape[0], 10)  # shared input
    assert net(torch.stack([x, x])).shape == (2, shape[0], 10)  # one input per member


@pytest.mark.parametrize("name", ["lenet300", "conv4"])
def test_stacked_members_compute_what_single_networks_compute(name):
    seeds = [3, 4, 5]
    stacked = initialized_network(name, seeds)
    x = torch.rand(3, 4, *stacked.arch.input_shape)
    out = stacked(x)
    for k, seed in enumerate(seeds):
        torch.testing.assert_close(
            out[k], initialized_network(name, seed)(x[k : k + 1])[0], rtol=1e-5, atol=1e-5
        )


def test_glorot_normal_statistics_and_zero_biases():
    state = glorot_init("lenet300", seed=0)
    w = state["layers.fc1.weight"]
    assert abs(w.std().item() - (2 / (784 + 300)) ** 0.5) < 2e-4
    assert abs(w.mean().item()) < 2e-4
    assert all(torch.count_nonzero(v) == 0 for k, v in state.items() if k.endswith("bias"))
    conv = glorot_init("conv2", seed=0)["layers.conv2.weight"]  # fan = channels * 9
    assert abs(conv.std().item() - (2 / (64 * 9 + 64 * 9)) ** 0.5) < 1e-3


def test_init_depends_on_seed_only():
    a, b, c = (glorot_init("lenet300", s) for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.fc1.weight"], c["layers.fc1.weight"])
