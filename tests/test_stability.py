"""Linear interpolation between two networks and the instability read from it."""

import importlib
import json

import pytest
import torch
from helpers import initialized_network

from lth_lib.data import Dataset
from lth_lib.lottery import run
from lth_lib.protocol import INTERPOLATION_POINTS, paper_experiment
from lth_lib.stability import error_rates, instability, interpolate, interpolation_errors, stability

STABILITY = importlib.import_module("lth_lib.stability")  # the module (lth_lib.stability is the function)


def test_identical_endpoints_give_a_flat_line_and_zero_instability():
    network = initialized_network("lenet300", [3, 3])
    x, y = torch.rand(500, 784), torch.randint(0, 10, (500,))
    errors = interpolation_errors(network, 0, 1, x, y)
    assert len(errors) == INTERPOLATION_POINTS and len(set(errors)) == 1
    assert instability(errors) == 0.0


def test_the_line_runs_from_the_first_member_to_the_second():
    network = initialized_network("conv2", [0, 1, 2])
    line = interpolate(network, 2, 0, points=5)
    for ours, theirs in zip(line.parameters(), network.parameters()):
        torch.testing.assert_close(ours[0], theirs[2])
        torch.testing.assert_close(ours[-1], theirs[0])
        torch.testing.assert_close(ours[2], (theirs[0] + theirs[2]) / 2)
    x, y = torch.rand(50, 3, 32, 32), torch.randint(0, 10, (50,))
    ends = error_rates(line, x, y)
    alone = error_rates(network, x, y)
    assert (ends[0], ends[-1]) == pytest.approx((alone[2], alone[0]), abs=1e-6)


def test_instability_is_the_barrier_above_the_mean_of_the_ends():
    assert instability([0.1, 0.3, 0.5, 0.2]) == pytest.approx(0.5 - 0.15)
    assert instability([0.2, 0.1, 0.2]) == 0.0  # a dip below the ends is no barrier
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(initialized_network("lenet300", [0, 1]), 0, 1, points=1)


def test_stability_trains_two_copies_from_the_rewind_point(synthetic):
    exp = paper_experiment(
        "lenet300", iterations=40, eval_every=20, eval_examples=200, rounds=1, rewind_iteration=10
    )
    results = run(exp, synthetic, results_store=False, progress=False)
    dense, ticket = stability(results, 0, synthetic), stability(results, 1, synthetic)
    assert (dense.rewind_iteration, dense.level, ticket.level) == (10, 0, 1)
    assert ticket.percent_remaining == results.percent_remaining(1)
    assert len(dense.errors) == INTERPOLATION_POINTS and 0 <= dense.instability <= 1
    assert dense.errors != ticket.errors
    assert stability(results, 1, synthetic).errors == ticket.errors  # reproducible from the seeds


def test_stability_is_kept_and_read_back_without_training(synthetic, tmp_path, monkeypatch):
    exp = paper_experiment(
        "lenet300", iterations=40, eval_every=20, eval_examples=200, rounds=1, rewind_iteration=10
    )
    results = run(exp, synthetic, results_root=tmp_path, progress=False)
    assert stability(results, 1, training=False) is None  # nothing kept yet, and no training
    measured = stability(results, 1, synthetic)
    [kept] = (results.directory / "stability").glob("*.json")
    monkeypatch.setattr(STABILITY, "train", None)  # reading back must not train
    again = stability(results, 1, training=False)
    assert again == measured and again.instability == measured.instability and len(again.copies) == 2
    payload = json.loads(kept.read_text())
    payload["stability"]["errors"][3] += 0.01  # a corrupted file is not served
    kept.write_text(json.dumps(payload))
    assert stability(results, 1, training=False) is None
    kept.write_text(kept.read_text()[:50])  # nor a torn one
    assert stability(results, 1, training=False) is None


def test_conv_stability_copies_train_one_at_a_time_on_a_cpu(monkeypatch, tmp_path):
    stacks, real_train = [], STABILITY.train
    monkeypatch.setattr(
        STABILITY,
        "train",
        lambda network, members, *a, **k: (
            stacks.append(len(members)) or real_train(network, members, *a, **k)
        ),
    )
    cifar = Dataset("cifar10", "synthetic", torch.rand(6000, 3, 32, 32), torch.randint(0, 10, (6000,)),
                    torch.rand(100, 3, 32, 32), torch.randint(0, 10, (100,)))  # fmt: skip
    exp = paper_experiment("conv2", iterations=2, eval_every=1, eval_examples=50, rounds=1)
    results = run(exp, cifar, results_root=tmp_path, progress=False)
    assert len(stability(results, 0, cifar).errors) == INTERPOLATION_POINTS
    assert stacks == [1, 1]
