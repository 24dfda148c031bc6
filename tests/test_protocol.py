"""The protocol module: the paper's settings in one place, and the identities they name."""

import dataclasses

import pytest
import torch

from lth_lib.advance import queue
from lth_lib.data import COPIES
from lth_lib.notebook import NOTEBOOKS, NotebookParameters
from lth_lib.paths import PROJECT
from lth_lib.protocol import (
    DROPOUT,
    NETWORKS,
    SCALES,
    default_rewind_iterations,
    default_scale,
    paper_experiment,
    scaled_experiment,
    warmup_experiment,
)

# Identities of the experiments the notebooks draw, as the code named them before the
# protocol moved into one module and the notebooks into one registry: a change here renames
# every stored experiment. Per scale, per notebook (in NOTEBOOKS' order), per network, per drawing.
IDENTITIES = {
    "smoke": {
        "lenet_mnist": {"lenet300": ["b4d1c2abce2ba9e6"]},
        "conv_cifar10": {
            "conv2": ["4fd9b15b8a596243"],
            "conv4": ["74557e06b4338876"],
            "conv6": ["bd5facdb806e1f70"],
        },
        "oneshot_vs_iterative": {
            "lenet300": ["b4d1c2abce2ba9e6", "bc38492cf52efe85"],
            "conv2": ["4fd9b15b8a596243", "a83fec481eedc8db"],
        },
        "controls": {"lenet300": ["b4d1c2abce2ba9e6"], "conv2": ["4fd9b15b8a596243"]},
        "weight_travel": {"lenet300": ["b4d1c2abce2ba9e6"]},
        "tickets": {"lenet300": ["b4d1c2abce2ba9e6"], "conv2": ["4fd9b15b8a596243"]},
        "dropout": {
            "conv2": ["fa0c8e9151d22dab", "4fd9b15b8a596243"],
            "conv4": ["154a38aee58a1b8a", "74557e06b4338876"],
            "conv6": ["24d1570a7e9fcae7", "bd5facdb806e1f70"],
        },
        "rewinding": {
            "lenet300": ["b4d1c2abce2ba9e6", "ae26d3f4180137aa", "411d386c74c356a0"],
            "conv2": ["4fd9b15b8a596243", "061d789adbfc8feb"],
        },
        "deeper": {
            "resnet20": ["26332244ac0370ef", "7b6f508debeb02fe", "04e24656d7d05ae3"],
            "vgg19": ["5235b6c1661cbd7b", "a3ee45ea8f6c2a25", "a04a0fef9836ea9f"],
        },
    },
    "cpu": {
        "lenet_mnist": {"lenet300": ["34fab19358d198d1"]},
        "conv_cifar10": {
            "conv2": ["bf8fe19f5d864452"],
            "conv4": ["68a5c6caaec3fee4"],
            "conv6": ["9c770b66c15cba0b"],
        },
        "oneshot_vs_iterative": {
            "lenet300": ["34fab19358d198d1", "c3e16871afd91c2a"],
            "conv2": ["bf8fe19f5d864452", "c14a333b904d1d21"],
        },
        "controls": {"lenet300": ["34fab19358d198d1"], "conv2": ["bf8fe19f5d864452"]},
        "weight_travel": {"lenet300": ["34fab19358d198d1"]},
        "tickets": {"lenet300": ["34fab19358d198d1"], "conv2": ["bf8fe19f5d864452"]},
        "dropout": {
            "conv2": ["a51f6a463678c20b", "bf8fe19f5d864452"],
            "conv4": ["98bfcc3ca09f6743", "68a5c6caaec3fee4"],
            "conv6": ["ecdd10f6145dd752", "9c770b66c15cba0b"],
        },
        "rewinding": {
            "lenet300": ["34fab19358d198d1", "04294976e7913732", "c0624adf96ac79ea"],
            "conv2": ["bf8fe19f5d864452", "401ff2ea9dcbdd47", "307f8e453295d17b"],
        },
        "deeper": {
            "resnet20": ["1237d1766374345a", "ee849c11b25a5f16", "acba263bd5c7504a"],
            "vgg19": ["f1f2f87f21037499", "57c722bb49a0de3f", "76d04fc654b9db96"],
        },
    },
    "paper": {
        "lenet_mnist": {"lenet300": ["885dc86e37b91475"]},
        "conv_cifar10": {
            "conv2": ["0fb45e849d5221ba"],
            "conv4": ["6e946370749ec0f7"],
            "conv6": ["992f59eea4d7d014"],
        },
        "oneshot_vs_iterative": {
            "lenet300": ["885dc86e37b91475", "ed6e45bd42889a56"],
            "conv2": ["0fb45e849d5221ba", "e461ddc8d686d088"],
        },
        "controls": {"lenet300": ["885dc86e37b91475"], "conv2": ["0fb45e849d5221ba"]},
        "weight_travel": {"lenet300": ["885dc86e37b91475"]},
        "tickets": {"lenet300": ["885dc86e37b91475"], "conv2": ["0fb45e849d5221ba"]},
        "dropout": {
            "conv2": ["45abeebbcebc0ce7", "0fb45e849d5221ba"],
            "conv4": ["91de94cac5e42e00", "6e946370749ec0f7"],
            "conv6": ["c6f64c4ddc5d4ce6", "992f59eea4d7d014"],
        },
        "rewinding": {
            "lenet300": ["885dc86e37b91475", "8458ae2914a27ecd", "a468687eda4c75e4"],
            "conv2": ["0fb45e849d5221ba", "8039bc5fd44fff04", "484dc6e9eeba0f03"],
        },
        "deeper": {
            "resnet20": ["4110628801587edd", "c4f81f9ceb2facdd", "445e5aea3cbd7862"],
            "vgg19": ["37cc1ce97235dc6a", "020a3d90133124b3", "0d5ff75bb25c985f"],
        },
    },
}  # fmt: skip
# The five experiments every scale's results were first stored under (LeNet iterative and
# one-shot, Conv-2/4/6 iterative), at each scale.
FIRST = {
    "smoke": [
        "b4d1c2abce2ba9e6",
        "bc38492cf52efe85",
        "4fd9b15b8a596243",
        "74557e06b4338876",
        "bd5facdb806e1f70",
    ],
    "cpu": [
        "34fab19358d198d1",
        "c3e16871afd91c2a",
        "bf8fe19f5d864452",
        "68a5c6caaec3fee4",
        "9c770b66c15cba0b",
    ],
    "paper": [
        "885dc86e37b91475",
        "ed6e45bd42889a56",
        "0fb45e849d5221ba",
        "6e946370749ec0f7",
        "992f59eea4d7d014",
    ],
}


def _drawn(scale: str) -> dict:
    return {
        name: {network: [e.identity() for e in drawn.values()]
               for network, drawn in NotebookParameters(name, scale).experiments().items()}
        for name in NOTEBOOKS
    }  # fmt: skip


@pytest.mark.parametrize("scale", list(IDENTITIES))
def test_the_notebooks_experiments_keep_their_identities(scale):
    assert _drawn(scale) == IDENTITIES[scale]


@pytest.mark.parametrize("scale", list(FIRST))
def test_the_first_stored_experiments_keep_their_identities_at_every_scale(scale):
    drawn = {
        identity for by_network in _drawn(scale).values() for ids in by_network.values() for identity in ids
    }
    assert set(FIRST[scale]) <= drawn
    assert set(FIRST[scale]) <= {exp.identity() for exp in queue(scale)}  # and advance trains them


def test_api_experiments_keep_their_identities():
    assert paper_experiment("lenet300", iterations=1000, rounds=2).identity() == "1a1be25a0af85a91"
    custom = paper_experiment("conv2", fc_rate=0.3, rewind_iteration=10, scope="global")
    assert custom.identity() == "ab527e6c927dbeb1"


def test_the_committed_paper_store_is_found_under_the_same_names():
    folders = {p.name for p in (PROJECT / "figures" / "data" / "paper").iterdir()}
    named = {
        f"{exp.network}-{exp.pruning.strategy}-{dataclasses.replace(exp, data_copy=copy).identity()}"
        for exp in queue("paper")
        for copy in COPIES[NETWORKS[exp.network].architecture.dataset]
    }
    assert folders and folders <= named


def test_every_scale_names_every_network_and_keeps_the_paper_protocol():
    for scale in SCALES:
        for network, protocol in NETWORKS.items():
            assert scale == "paper" or scale in protocol.scales
            exp, paper = scaled_experiment(network, scale), scaled_experiment(network, "paper")
            assert (exp.training.lr, exp.rates, exp.pruning.scope) == (
                paper.training.lr, paper.rates, paper.pruning.scope,
            )  # fmt: skip
            # the batch too, except in Section 4's smoke runs: seconds, not the protocol
            smoke_deep = scale == "smoke" and network in ("vgg19", "resnet20")
            assert (exp.training.batch_size == paper.training.batch_size) != smoke_deep


def test_the_paper_scale_is_the_protocol():
    for network, protocol in NETWORKS.items():
        exp = scaled_experiment(network, "paper")
        assert (exp.training.iterations, exp.training.lr, exp.trials, exp.control_trials, exp.pruning.rounds) == (
            protocol.iterations, protocol.lr, protocol.trials, protocol.control_trials, protocol.rounds,
        )  # fmt: skip
        assert exp.training.eval_examples is None  # all of the validation and test sets
        output = protocol.architecture.weight_layers[-1]
        assert exp.rates[output] == (0.0 if output in protocol.unpruned else protocol.fc_rate / 2)


def test_the_protocol_matches_the_paper():
    assert (NETWORKS["lenet300"].iterations, NETWORKS["lenet300"].lr) == (50_000, 1.2e-3)
    assert [NETWORKS[n].iterations for n in ("conv2", "conv4", "conv6")] == [20_000, 25_000, 30_000]
    assert [NETWORKS[n].lr for n in ("conv2", "conv4", "conv6")] == [2e-4, 3e-4, 3e-4]
    assert [NETWORKS[n].conv_rate for n in ("conv2", "conv4", "conv6")] == [0.1, 0.1, 0.15]
    sections_2_3 = [NETWORKS[n] for n in ("lenet300", "conv2", "conv4", "conv6")]
    assert {p.fc_rate for p in sections_2_3} == {0.2} and {p.batch_size for p in sections_2_3} == {60}
    assert {(p.optimizer, p.lr_drops, p.augment, p.scope, p.unpruned) for p in sections_2_3} == {
        ("adam", (), False, "layer", ())
    }


def test_section_4_protocol_matches_the_paper():
    """Figure 2's table and Appendix I.2-I.5 of arXiv 1803.03635v5."""
    vgg, resnet = paper_experiment("vgg19"), paper_experiment("resnet20")
    assert (vgg.training.iterations, vgg.training.batch_size, vgg.training.lr_drops) == (
        112_480,
        64,
        (56_240, 84_360),
    )
    assert (resnet.training.iterations, resnet.training.batch_size, resnet.training.lr_drops) == (
        30_000, 128, (20_000, 25_000))  # fmt: skip
    for exp in (vgg, resnet):
        t = exp.training
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.warmup, t.augment) == (
            "sgd",
            0.1,
            0.9,
            1e-4,
            0,
            True,
        )
        assert exp.pruning.scope == "global" and set(exp.rates.values()) == {0.2, 0.0}
    assert [layer for layer, rate in vgg.rates.items() if not rate] == ["fc"]
    assert [layer for layer, rate in resnet.rates.items() if not rate] == [
        "blocks.3.shortcut.0", "blocks.6.shortcut.0", "fc"]  # fmt: skip
    warm_vgg, warm_resnet = warmup_experiment("vgg19", "paper"), warmup_experiment("resnet20", "paper")
    assert (warm_vgg.training.lr, warm_vgg.training.warmup) == (0.1, 10_000)
    assert (warm_resnet.training.lr, warm_resnet.training.warmup) == (0.03, 20_000)
    # at a scale, drops and warm-up keep their share of training
    cpu = warmup_experiment("resnet20", "cpu")
    assert cpu.training.lr_drops == (133, 167) and cpu.training.warmup == 133 == round(200 * 2 / 3)


def test_dropout_runs_as_the_dropout_figure_does():
    for network, lr in (("conv2", 3e-4), ("conv4", 2e-4), ("conv6", 2e-4)):
        exp = paper_experiment(network, dropout=DROPOUT)
        assert (exp.training.dropout, exp.training.lr) == (0.5, lr)
        assert exp.training.iterations == 3 * NETWORKS[network].iterations
        assert exp.rates == paper_experiment(network).rates
    assert paper_experiment("conv2", dropout=0.5, lr=1e-3, iterations=10).training.lr == 1e-3
    cpu = scaled_experiment("conv2", "cpu", dropout=0.5)  # a scale's iterations are its own
    assert cpu.training.iterations == scaled_experiment("conv2", "cpu").training.iterations


def test_one_default_scale_for_notebooks_and_regenerate(monkeypatch):
    from lth_lib.notebook import NotebookParameters

    monkeypatch.setenv("LTH_SCALE", "smoke")
    assert default_scale() == "smoke" == NotebookParameters().scale
    monkeypatch.setenv("LTH_SCALE", "huge")
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        NotebookParameters()
    monkeypatch.delenv("LTH_SCALE")
    assert NotebookParameters().scale == default_scale() == ("paper" if torch.cuda.is_available() else "cpu")


def test_rewind_iterations_are_fractions_of_the_scales_training():
    assert default_rewind_iterations("lenet300", "paper") == [0, 1000, 5000]
    assert default_rewind_iterations("conv2", "cpu") == [0, 6, 30]
    assert default_rewind_iterations("conv2", "smoke") == [0, 1]  # at least one iteration where not 0
