"""The protocol module: the paper's settings in one place, and the identities they name."""

import dataclasses

import pytest
import torch

from lth_lib.data import COPIES
from lth_lib.paths import PROJECT
from lth_lib.protocol import (
    DROPOUT,
    PAPER,
    SCALES,
    default_rewind_iterations,
    default_scale,
    experiments_in_order,
    paper_experiment,
    scaled_experiment,
)

# Identities of the experiments the notebooks draw, as the code named them before the
# protocol moved into one module: a change here renames every stored experiment.
IDENTITIES = {
    "smoke": ["b4d1c2abce2ba9e6", "bc38492cf52efe85", "4fd9b15b8a596243", "74557e06b4338876", "bd5facdb806e1f70"],
    "cpu": ["34fab19358d198d1", "c3e16871afd91c2a", "bf8fe19f5d864452", "68a5c6caaec3fee4", "9c770b66c15cba0b"],
    "paper": ["885dc86e37b91475", "ed6e45bd42889a56", "0fb45e849d5221ba", "6e946370749ec0f7", "992f59eea4d7d014"],
}


@pytest.mark.parametrize("scale", list(IDENTITIES))
def test_the_notebooks_experiments_keep_their_identities(scale):
    assert [exp.identity() for exp in experiments_in_order(scale)] == IDENTITIES[scale]


def test_api_experiments_keep_their_identities():
    assert paper_experiment("lenet300", iterations=1000, rounds=2).identity() == "1a1be25a0af85a91"
    custom = paper_experiment("conv2", fc_rate=0.3, rewind_iteration=10, scope="global")
    assert custom.identity() == "ab527e6c927dbeb1"


def test_the_committed_paper_store_is_found_under_the_same_names():
    folders = {p.name for p in (PROJECT / "figures" / "data" / "paper").iterdir()}
    named = {
        f"{exp.network}-{exp.pruning.strategy}-{dataclasses.replace(exp, data_copy=copy).identity()}"
        for exp in experiments_in_order("paper")
        for copy in COPIES[PAPER[exp.network].architecture.dataset]
    }
    assert folders and folders <= named


def test_every_scale_names_every_network_and_keeps_the_paper_protocol():
    for scale, networks in SCALES.items():
        assert set(networks) == set(PAPER)
        for network in networks:
            exp, paper = scaled_experiment(network, scale), scaled_experiment(network, "paper")
            assert (exp.training.lr, exp.training.batch_size, exp.rates, exp.pruning.scope) == (
                paper.training.lr, paper.training.batch_size, paper.rates, paper.pruning.scope,
            )  # fmt: skip


def test_the_paper_scale_is_the_protocol():
    for network, protocol in PAPER.items():
        exp = scaled_experiment(network, "paper")
        assert (exp.training.iterations, exp.training.lr, exp.trials, exp.control_trials, exp.pruning.rounds) == (
            protocol.iterations, protocol.lr, protocol.trials, protocol.control_trials, protocol.rounds,
        )  # fmt: skip
        assert exp.training.eval_examples is None  # all of the validation and test sets
        assert exp.rates[f"fc{len(protocol.architecture.fc)}"] == protocol.fc_rate / 2


def test_the_protocol_matches_the_paper():
    assert (PAPER["lenet300"].iterations, PAPER["lenet300"].lr) == (50_000, 1.2e-3)
    assert [PAPER[n].iterations for n in ("conv2", "conv4", "conv6")] == [20_000, 25_000, 30_000]
    assert [PAPER[n].lr for n in ("conv2", "conv4", "conv6")] == [2e-4, 3e-4, 3e-4]
    assert [PAPER[n].conv_rate for n in ("conv2", "conv4", "conv6")] == [0.1, 0.1, 0.15]
    assert {p.fc_rate for p in PAPER.values()} == {0.2} and {p.batch_size for p in PAPER.values()} == {60}


def test_dropout_runs_as_the_dropout_figure_does():
    for network, lr in (("conv2", 3e-4), ("conv4", 2e-4), ("conv6", 2e-4)):
        exp = paper_experiment(network, dropout=DROPOUT)
        assert (exp.training.dropout, exp.training.lr) == (0.5, lr)
        assert exp.training.iterations == 3 * PAPER[network].iterations
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
