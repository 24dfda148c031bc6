"""Exporting one network of an experiment as a plain nn.Sequential with its pruning masks."""

import copy
import dataclasses
import io
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lth_lib.data import Dataset
from lth_lib.export import export_ticket, plain_network
from lth_lib.lottery import run
from lth_lib.models import Network
from lth_lib.portable import NOT_KEPT
from lth_lib.protocol import paper_experiment
from lth_lib.results import NotKeptError
from lth_lib.store import load_level
from lth_lib.train import Member, train

CONTROLS = ("reinit", "random_prune")


@pytest.fixture(scope="module")
def lenet(synthetic):
    exp = paper_experiment("lenet300", iterations=20, eval_every=10, eval_examples=200, rounds=2, trials=2,
                           controls=CONTROLS)  # fmt: skip
    return run(exp, synthetic, results_store=False, progress=False)


@pytest.fixture(scope="module")
def cifar() -> Dataset:
    """CIFAR-shaped random data, just over the 5,000 validation examples."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5160, 3, 32, 32, generator=g), torch.randint(0, 10, (5160,), generator=g)
    return Dataset("cifar10", "synthetic", x[:5100], y[:5100], x[5100:], y[5100:])


@pytest.fixture(scope="module")
def conv2(cifar):
    exp = paper_experiment("conv2", iterations=2, eval_every=2, eval_examples=60, rounds=1, trials=1)
    return run(exp, cifar, results_store=False, progress=False)


@pytest.fixture(scope="module")
def rewound(synthetic, tmp_path_factory):
    """LeNet rewound to iteration 10, whose theta_k only the results store keeps."""
    exp = paper_experiment("lenet300", iterations=20, eval_every=10, eval_examples=200, rounds=1,
                           rewind_iteration=10, controls=("random_prune",))  # fmt: skip
    return run(exp, synthetic, results_root=tmp_path_factory.mktemp("results"), progress=False)


def weighted(module: nn.Sequential) -> dict[str, nn.Module]:
    """The export's conv and linear layers by the name of the Network layer they hold."""
    convs = [m for m in module if isinstance(m, nn.Conv2d)]
    linears = [m for m in module if isinstance(m, nn.Linear)]
    return {f"conv{i}": m for i, m in enumerate(convs, 1)} | {f"fc{i}": m for i, m in enumerate(linears, 1)}


def member(module: nn.Sequential, seed: int) -> Member:
    """A masked export as the Member `lth_lib.train` trains."""
    weights, mask = {}, {}
    for name, layer in weighted(module).items():
        weights |= {
            f"layers.{name}.weight": layer.weight_orig.detach(),
            f"layers.{name}.bias": layer.bias.detach(),
        }
        mask[name] = layer.weight_mask.bool()
    return Member(weights, mask, seed)


def network_output(results, states: list[dict], masks: list[dict], x: torch.Tensor) -> torch.Tensor:
    """lth_lib's own stacked Network, one member per (state, mask), on input `x`."""
    network = Network(results.experiment.network, members=len(states))
    masked = [{k: v * mask[k.split(".")[1]] if k.endswith("weight") else v for k, v in s.items()}
              for s, mask in zip(states, masks)]  # fmt: skip
    network.load_members(masked)
    with torch.no_grad():
        return network(x)


def inputs(results, synthetic, cifar) -> torch.Tensor:
    return (cifar if results.experiment.network == "conv2" else synthetic).test_x[:16]


@pytest.mark.parametrize("name", ["lenet", "conv2"])
def test_export_computes_what_the_stacked_network_computes_for_that_member(name, request, synthetic, cifar):
    results = request.getfixturevalue(name)
    x = inputs(results, synthetic, cifar)
    level, trial = results.experiment.pruning.rounds, results.experiment.trials - 1
    ticket = export_ticket(results, level=level, trial=trial)
    dense = export_ticket(results, level=0, trial=trial, weights="trained")
    # member `trial` of a stack: the dense trained network beside it tests the stacking (and conv flattening)
    states = [results.dense_weights[trial], results.initial_weights[trial]]
    masks = [results.masks[0][trial], results.masks[level][trial]]
    expected = network_output(results, states, masks, x)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), expected[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ticket(x), expected[1], rtol=1e-5, atol=1e-6)
    assert isinstance(ticket, nn.Sequential) and str(ticket) == str(plain_network(results.experiment.network))
    if name == "lenet":  # small enough for the store to keep its trained tickets
        trained = export_ticket(results, level=level, trial=trial, weights="trained")
        state = results.trained_tickets[level][trial]
        expected = network_output(results, [state], [results.masks[level][trial]], x)
        with torch.no_grad():
            torch.testing.assert_close(trained(x), expected[0], rtol=1e-5, atol=1e-6)
    else:  # Conv-2's 4.3M weights: too large to keep at every level
        with pytest.raises(NotKeptError, match="trained ticket of this level is not kept"):
            export_ticket(results, level=level, trial=trial, weights="trained")


def test_each_layer_is_exactly_as_sparse_as_its_mask(lenet):
    for record in (r for r in lenet.records if r.level == 2):
        module = export_ticket(lenet, level=2, trial=record.trial, kind=record.kind)
        for name, layer in weighted(module).items():
            kept = layer.weight_mask.bool()
            assert torch.equal(layer.weight != 0, kept) and torch.equal(layer.weight_orig != 0, kept)
            assert int(kept.sum()) == record.layer_remaining[name]
            zeros = float((layer.weight == 0).double().mean())
            assert zeros == pytest.approx(1 - record.layer_remaining[name] / kept.numel(), abs=1e-12)
        if record.kind == "ticket":
            ticket = lenet.masks[2][record.trial]
            assert all(
                torch.equal(layer.weight_mask.bool(), ticket[n]) for n, layer in weighted(module).items()
            )


def test_exports_retrain_to_the_curves_their_records_hold(lenet, rewound, synthetic):
    """Tickets and both controls, theta_0 or theta_k: trained again from the export, each
    member follows its recorded curve, so the export is the network that was trained."""
    for results in (lenet, rewound):
        exp = results.experiment
        records = [r for r in results.records if r.level == 1]  # in the order they trained, as one stack
        members = [
            member(
                export_ticket(results, level=1, trial=r.trial, kind=r.kind, control=r.control_index),
                exp.seeds[r.trial],
            )
            for r in records
        ]
        retrained = train(exp.network, members, synthetic, exp.training, exp.pruning.rewind_iteration)
        for record, result in zip(records, retrained):
            for key in ("val_loss", "test_acc"):
                torch.testing.assert_close(result.curve[key], record.curve[key], rtol=1e-5, atol=1e-6)


def test_rewind_exports_theta_k_from_the_store(rewound):
    [theta_k] = load_level(rewound.directory, 0).rewind
    assert torch.equal(rewound.rewind_weights[0]["layers.fc1.weight"], theta_k["layers.fc1.weight"])
    [mask] = rewound.masks[1]
    start = weighted(export_ticket(rewound, level=1))["fc1"].weight_orig.detach()
    assert torch.equal(start, theta_k["layers.fc1.weight"] * mask["fc1"])
    assert not torch.equal(start, rewound.initial_weights[0]["layers.fc1.weight"] * mask["fc1"])
    with pytest.raises(NotKeptError, match="the weights at the rewind iteration are not kept"):
        export_ticket(dataclasses.replace(rewound, rewind_weights=NOT_KEPT["rewind"]), level=1)


def test_deepcopy_and_saving_round_trip_even_after_a_training_pass(lenet, synthetic):
    x = synthetic.test_x[:16]
    module = export_ticket(lenet, level=2, trial=1)
    F.cross_entropy(module(x), synthetic.test_y[:16]).backward()  # leaves the pruning hooks' graph behind
    twin = copy.deepcopy(module)
    assert torch.equal(twin(x), module(x)) and prune.is_pruned(twin)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), module(x)) and prune.is_pruned(loaded)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"0.weight_orig", "0.weight_mask"} <= set(state) and "0.weight" not in state
    other = export_ticket(lenet, level=1, trial=0, kind="random_prune")
    other.load_state_dict(state)
    assert torch.equal(other(x), module(x))
    with pytest.raises(RuntimeError, match="weight_orig"):  # a masked state dict needs a masked module
        plain_network("lenet300").load_state_dict(state)


@pytest.mark.parametrize("name", ["lenet", "conv2"])
def test_finalized_state_dict_loads_into_a_fresh_plain_network(name, request, synthetic, cifar):
    results = request.getfixturevalue(name)
    x = inputs(results, synthetic, cifar)
    masked = export_ticket(results, level=1)
    final = export_ticket(results, level=1, finalize=True)
    state = final.state_dict()
    assert "0.weight" in state and all(key.endswith((".weight", ".bias")) for key in state)
    assert not prune.is_pruned(final) and not any(m._forward_hooks for m in final)
    fresh = plain_network(results.experiment.network)
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), masked(x), rtol=0, atol=0)
    masks = {n: layer.weight_mask.bool() for n, layer in weighted(masked).items()}
    assert all(torch.equal(layer.weight != 0, masks[n]) for n, layer in weighted(fresh).items())


@pytest.mark.parametrize(
    "optimizer",
    [partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-3), partial(torch.optim.Adam, lr=1e-2)],
    ids=["sgd", "adam"],
)
def test_training_the_masked_export_keeps_pruned_weights_zero(optimizer, lenet, synthetic):
    module = export_ticket(lenet, level=2, trial=0, kind="reinit")
    before = {n: layer.weight.detach().clone() for n, layer in weighted(module).items()}
    step = optimizer(module.parameters())
    for batch in (slice(0, 60), slice(60, 120)):
        step.zero_grad()
        F.cross_entropy(module(synthetic.train_x[batch]), synthetic.train_y[batch]).backward()
        step.step()
    with torch.no_grad():
        module(synthetic.test_x[:1])  # the pruning hooks recompute each weight from weight_orig and the mask
    for name, layer in weighted(module).items():
        pruned = ~layer.weight_mask.bool()
        assert torch.all(layer.weight[pruned] == 0) and torch.all(layer.weight_orig[pruned] == 0)
        assert not torch.equal(layer.weight, before[name])  # the survivors did train


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"level": 3}, r"level must be one of 0, 1, 2; got 3"),
        ({"level": 1, "trial": 2}, r"trial must be one of 0, 1; got 2"),
        (
            {"level": 1, "kind": "random"},
            r"kind at level 1 must be one of 'ticket', 'reinit', 'random_prune'",
        ),
        ({"level": 0, "kind": "reinit"}, r"kind at level 0 must be one of 'ticket'; got 'reinit'"),
        ({"level": 1, "kind": "reinit", "control": 1}, r"control index of a reinit must be one of 0; got 1"),
        ({"level": 1, "weights": "final"}, r"weights must be one of 'rewind', 'trained'"),
        (
            {"level": 1, "kind": "reinit", "weights": "trained"},
            r"trained weights only of the tickets \(the dense network at level 0\)",
        ),
    ],
)
def test_what_cannot_be_exported_is_a_clear_error(arguments, message, lenet):
    with pytest.raises(ValueError, match=message):
        export_ticket(lenet, **arguments)


@pytest.mark.parametrize(
    "not_kept, arguments, message",
    [
        (
            {"dense_weights": NOT_KEPT["dense"]},
            {"level": 0, "weights": "trained"},
            "trained dense weights are not kept",
        ),
        ({"masks": {0: None, 1: None, 2: NOT_KEPT["next_masks"]}}, {"level": 2}, "ticket masks are not kept"),
        (
            {"trained_tickets": {2: NOT_KEPT["tickets"]}},
            {"level": 2, "weights": "trained"},
            "the trained tickets are not kept",
        ),
        (
            {"rewind_weights": NOT_KEPT["rewind"]},
            {"level": 1},
            "weights at the rewind iteration are not kept",
        ),
    ],
)
def test_what_the_store_does_not_keep_is_a_clear_error(not_kept, arguments, message, lenet):
    with pytest.raises(NotKeptError, match=message):
        export_ticket(dataclasses.replace(lenet, **not_kept), **arguments)
