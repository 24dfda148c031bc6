import dataclasses
import math

import pytest
import torch

from lth_lib.data import Dataset
from lth_lib.models import Network, glorot_init
from lth_lib.protocol import TrainingHparams, architecture, paper_experiment
from lth_lib.pruning import dense_mask, magnitude_prune, random_prune
from lth_lib.train import Member, TrainStep, early_stop, train

FAST = TrainingHparams(iterations=30, lr=1.2e-3, eval_every=10, eval_examples=300)


def member(seed: int, mask=None, network: str = "lenet300") -> Member:
    return Member(glorot_init(network, seed), mask or dense_mask(network), seed)


def half_pruned(seed: int = 0):
    w = {k: v[0] for k, v in Network("lenet300").prunable().items()}
    w = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(seed)) for k, v in w.items()}
    return magnitude_prune(
        w, dense_mask("lenet300"), paper_experiment("lenet300", fc_rate=0.5, output_rate=0.5).rates
    )


def test_early_stop_picks_the_first_minimum_of_validation_loss():
    curve = {
        "iteration": [0, 100, 200, 300, 400, 500],
        "val_loss": [2.3, 0.9, 0.4, 0.5, 0.4, 0.6],
        "val_acc": [0.1, 0.7, 0.9, 0.88, 0.91, 0.87],
        "test_acc": [0.1, 0.71, 0.89, 0.90, 0.92, 0.86],
    }
    assert early_stop(curve) == {
        "early_stop_iteration": 200,
        "early_stop_val_loss": 0.4,
        "early_stop_val_acc": 0.9,
        "early_stop_test_acc": 0.89,  # not the best test accuracy (0.92): no test-set leak
    }
    with pytest.raises(ValueError, match="empty"):
        early_stop({k: [] for k in curve})


def test_pruned_weights_stay_exactly_zero_and_negative_survivors_train(synthetic):
    mask = half_pruned()
    start = member(0, mask)
    [result] = train("lenet300", [start], synthetic, FAST)
    for layer, m in mask.items():
        w = result.final_weights[f"layers.{layer}.weight"]
        assert torch.count_nonzero(w[~m]) == 0
        w0 = start.weights[f"layers.{layer}.weight"]
        moved = {sign: (w[m & (sign * w0 > 0)] != w0[m & (sign * w0 > 0)]).float().mean() for sign in (-1, 1)}
        assert moved[-1] > 0.5 and moved[1] > 0.5  # negative survivors train as positive ones do


def test_curve_and_bookkeeping(synthetic):
    [r] = train("lenet300", [member(0)], synthetic, FAST)
    assert r.curve["iteration"] == [0, 10, 20, 30]
    assert set(r.curve) == {"iteration", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert r.early_stop_iteration in r.curve["iteration"]
    assert r.final_test_acc == r.curve["test_acc"][-1]
    assert r.curve["val_loss"][-1] < r.curve["val_loss"][0]


def test_snapshots_are_the_weights_after_k_iterations(synthetic):
    [long] = train("lenet300", [member(0)], synthetic, FAST, snapshot_iterations=(7, 20))
    assert sorted(long.snapshots) == [7, 20]
    for k in (7, 20):
        [short] = train(
            "lenet300", [member(0)], synthetic, TrainingHparams(k, 1.2e-3, eval_every=10, eval_examples=300)
        )
        assert all(
            torch.equal(long.snapshots[k][name], short.final_weights[name]) for name in short.final_weights
        )


def test_same_seed_same_numbers(synthetic):
    a, b = (train("lenet300", [member(7, half_pruned())], synthetic, FAST)[0] for _ in range(2))
    assert a.curve == b.curve
    assert all(torch.equal(a.final_weights[k], b.final_weights[k]) for k in a.final_weights)


def cifar_shaped(n: int = 6000) -> Dataset:
    """CIFAR-shaped random images whose label is a linear function of the pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    labels = (x.flatten(1) @ torch.randn(3072, 10, generator=g)).argmax(1)
    return Dataset("cifar10", "synthetic", x[:-200], labels[:-200], x[-200:], labels[-200:])


def test_ensemble_equals_members_trained_one_by_one(synthetic):
    """Stacked and alone, a member computes the same arithmetic in a different kernel
    order, so the two agree to float rounding. Adam divides by the gradient's running
    scale, so where a gradient is near zero a rounding difference can flip a step's sign:
    a few weights may then differ by up to a step (lr); all others agree to 1e-5."""
    members = [
        member(0),
        member(1, half_pruned(1)),
        member(2, random_prune(half_pruned(2), torch.Generator())),
    ]
    together = train("lenet300", members, synthetic, FAST)
    for m, joint in zip(members, together):
        [alone] = train("lenet300", [m], synthetic, FAST)
        difference = torch.cat(
            [(joint.final_weights[k] - v).abs().flatten() for k, v in alone.final_weights.items()]
        )
        assert difference.max() <= FAST.lr
        assert (difference > 1e-5).float().mean() < 1e-3
        for key in ("val_loss", "test_loss"):
            torch.testing.assert_close(joint.curve[key], alone.curve[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("network", ["lenet300", "conv2"])
def test_with_dropout_each_stacked_member_steps_as_it_would_alone(network, synthetic):
    """Each member's dropout masks come from its own seed and the step, so at every step
    its gradient stacked equals its gradient alone, to float rounding (another member's
    masks would change it by as much as the gradient itself). (Over a whole run
    the two drift further apart than without dropout: Adam turns rounding-level
    differences in near-zero gradients into differences of a step, and dropout's sparse
    gradients have many more of those; so the check is per step.) Same seeds, same run:
    training with dropout is bit-for-bit reproducible."""
    data = synthetic if network == "lenet300" else cifar_shaped()
    masks = [random_prune(dense_mask(network), torch.Generator().manual_seed(s)) for s in (1, 2)]
    members = [member(0, network=network), member(1, masks[0], network), member(2, masks[1], network)]
    for step in (0, 1, 7):
        idx = torch.randint(0, len(data.train_x), (3, 60), generator=torch.Generator().manual_seed(step))
        joint = TrainStep.build(network, members, 1e-3, dropout=0.5)
        joint.step_count.fill_(step)
        joint(data.train_x, data.train_y, idx)
        for k, m in enumerate(members):
            alone = TrainStep.build(network, [m], 1e-3, dropout=0.5)
            alone.step_count.fill_(step)
            alone(data.train_x, data.train_y, idx[k : k + 1])
            for ours, theirs in zip(joint.params, alone.params):  # a grouped conv sums in another order
                assert (ours.grad[k] - theirs.grad[0]).norm() <= 1e-3 * theirs.grad[0].norm()
    hparams = dataclasses.replace(FAST, iterations=4, eval_every=2, eval_examples=100, dropout=0.5)
    first, again = (train(network, members[:2], data, hparams) for _ in range(2))
    without = train(network, members[:2], data, dataclasses.replace(hparams, dropout=0.0))
    for a, b, c in zip(first, again, without):
        assert all(torch.equal(a.final_weights[key], b.final_weights[key]) for key in a.final_weights)
        assert not torch.equal(a.final_weights["layers.fc1.weight"], c.final_weights["layers.fc1.weight"])


def test_dropout_is_not_in_the_manual_backward_pass():
    with pytest.raises(ValueError, match="without dropout"):
        TrainStep(Network("lenet300"), [torch.ones(1, *w.shape[1:]) for w in Network("lenet300").prunable().values()],
                  1e-3, manual=True, dropout=(0.5, [0]))  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("network", ["lenet300", "conv2"])
def test_a_replayed_cuda_graph_step_trains_as_the_eager_step_does(network):
    """On a GPU `train` replays each step as a CUDA graph; it must compute what launching the
    step's kernels one by one does (bit-identical on an H200), also once the TrainStep it
    was captured from is out of scope (the graph holds its tensors by address)."""
    shape = architecture(network).input_shape
    x, y = torch.rand(600, *shape, device="cuda"), torch.randint(0, 10, (600,), device="cuda")
    members = [member(seed, network=network) for seed in range(3)]
    eager = TrainStep.build(network, members, 1e-3, "cuda")
    replay = TrainStep.build(network, members, 1e-3, "cuda").captured(x, y, 60)
    for step in range(20):
        idx = torch.randint(0, 600, (3, 60), generator=torch.Generator().manual_seed(step)).cuda()
        eager(x, y, idx)
        replay(idx)
    for ours, theirs in zip(replay.step.params, eager.params):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "field,value",
    [
        ("iterations", 0),
        ("batch_size", -1),
        ("eval_every", 0),
        ("lr", 0.0),
        ("eval_examples", 0),
        ("dropout", 1.0),
    ],
)
def test_bad_training_hparams_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        paper_experiment("lenet300", **{field: value})


def test_paper_training_protocol():
    assert paper_experiment("lenet300").training == TrainingHparams(50_000, 1.2e-3, 60, 100)
    assert (
        paper_experiment("conv2").training.lr == 2e-4
        and paper_experiment("conv6").training.iterations == 30_000
    )
    with pytest.raises(ValueError, match="unknown network"):
        paper_experiment("lenet5")


@pytest.mark.slow
def test_lenet_reaches_95_percent_in_1000_iterations(mnist):
    [r] = train(
        "lenet300", [member(0)], mnist, paper_experiment("lenet300", iterations=1000, eval_every=500).training
    )
    assert r.final_test_acc > 0.95


def test_test_metrics_at_fewer_points_give_the_early_stop_and_final_numbers_of_evaluating_everything(
    synthetic,
):
    hparams = TrainingHparams(iterations=300, lr=1.2e-3, eval_every=10, eval_examples=300)
    start = [member(0), member(1)]
    every = train("lenet300", start, synthetic, hparams)
    fewer = train("lenet300", start, synthetic, hparams, test_every=100)
    lowest = [float("inf")] * len(start)
    for a, b in zip(every, fewer):
        assert (a.early_stop_iteration, a.early_stop_val_loss, a.early_stop_val_acc, a.early_stop_test_acc,
                a.final_test_acc) == (b.early_stop_iteration, b.early_stop_val_loss, b.early_stop_val_acc,
                                      b.early_stop_test_acc, b.final_test_acc)  # fmt: skip
        assert (a.curve["val_loss"], a.curve["val_acc"]) == (b.curve["val_loss"], b.curve["val_acc"])
        for key in ("test_loss", "test_acc"):  # where computed, the same values
            assert all(x == y for x, y in zip(a.curve[key], b.curve[key]) if not math.isnan(y))
    computed = [not math.isnan(v) for v in fewer[0].curve["test_acc"]]
    assert not all(computed)  # some points were left out...
    for i, iteration in enumerate(fewer[0].curve["iteration"]):  # ...but none that is needed
        losses = [r.curve["val_loss"][i] for r in fewer]
        new_low = any(loss < low for loss, low in zip(losses, lowest))
        lowest = [min(loss, low) for loss, low in zip(losses, lowest)]
        assert computed[i] == (new_low or iteration % 100 == 0 or iteration == hparams.iterations)
