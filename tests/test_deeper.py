"""Section 4's networks and any nn.Module: the paper's counts, stacking a module with batch
normalisation, SGD with warm-up and drops, augmentation, global pruning with layers left
out, and a user's own network from registration to a retrained exported ticket."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lth_lib.data import Augment, Dataset
from lth_lib.export import export_ticket
from lth_lib.lottery import run
from lth_lib.models import ModuleStack, count_prunable, glorot_init, initial_state, multiply_adds, stacked
from lth_lib.protocol import (
    NETWORKS,
    CustomNetwork,
    NetworkProtocol,
    TrainingHparams,
    paper_experiment,
    register_network,
)
from lth_lib.pruning import _keep_largest, dense_mask, magnitude_prune, mask_counts, random_prune
from lth_lib.train import Member, TrainStep, train

# The paper's Figure 2 table and Appendix I (arXiv 1803.03635v5): VGG-19 "20.0M" weights, of
# which the output layer's 5,120 are not pruned; the ResNet ("ResNet-18") "270K" conv weights
# (the text: "271,000" in all), of which the 2,560 downsampling weights are not pruned, nor
# the output layer's 640.
COUNTS = {
    "vgg19": {"all": 20_024_000, "conv": 20_018_880, "unpruned": {"fc": 5_120}, "table": "20.0M"},
    "resnet20": {
        "all": 270_896,
        "conv": 270_256,
        "unpruned": {"blocks.3.shortcut.0": 512, "blocks.6.shortcut.0": 2_048, "fc": 640},
        "table": "270K",  # the table's conv column; "271K" in all, as the text says
    },
}


@pytest.mark.parametrize("name", COUNTS)
def test_prunable_counts_match_the_paper(name):
    counts, expected = count_prunable(name), COUNTS[name]
    assert sum(counts.values()) == expected["all"]
    conv = sum(n for layer, n in counts.items() if layer != "fc")
    assert conv == expected["conv"]
    shown = f"{conv / 1e6:.1f}M" if conv >= 1e6 else f"{conv / 1e3:.0f}K"
    assert shown == expected["table"]
    assert f"{expected['all'] / 1e3:.0f}K" == "271K" or name == "vgg19"
    exp = paper_experiment(name)
    assert {layer: counts[layer] for layer, rate in exp.rates.items() if rate == 0} == expected["unpruned"]


def test_resnet_has_twenty_weight_layers_and_vgg_nineteen():
    assert (
        len(count_prunable("vgg19")) == 16 + 1
    )  # 16 convolutions, one dense (VGG-19 counts 3 fc of ImageNet's)
    layers = [layer for layer in count_prunable("resnet20") if "shortcut" not in layer]
    assert len(layers) == 20
    assert multiply_adds("resnet20") > 40e6 and multiply_adds("vgg19") > 390e6  # per example, forward


def cifar_shaped(n: int = 5400) -> Dataset:
    """CIFAR-shaped random images whose label is a linear function of the pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    labels = (x.flatten(1) @ torch.randn(3072, 10, generator=g)).argmax(1)
    return Dataset("cifar10", "synthetic", x[:-200], labels[:-200], x[-200:], labels[-200:])


class TinyBN(nn.Module):
    """A user's network: conv, batch norm, pool, a hidden linear layer, the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.hidden = nn.Linear(8 * 8 * 8, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.out(torch.relu(self.hidden(x.flatten(1))))


@pytest.fixture
def tiny_bn():
    register_network(
        "tiny_bn",
        NetworkProtocol(
            architecture=CustomNetwork("cifar10", (3, 32, 32), TinyBN), iterations=40, lr=0.05, batch_size=32,
            optimizer="sgd", momentum=0.9, conv_rate=0.2, scope="global", unpruned=("out",), eval_every=10,
        ),
    )  # fmt: skip
    yield "tiny_bn"
    del NETWORKS["tiny_bn"]


def test_a_users_network_finds_a_ticket_exports_it_and_retrains_it_in_plain_pytorch(tiny_bn, tmp_path):
    exp = paper_experiment(tiny_bn, rounds=2, controls=("reinit",), eval_examples=100)
    results = run(exp, cifar_shaped(), results_root=tmp_path, progress=False)
    assert results.levels_done == 3
    counts = count_prunable(tiny_bn)
    mask = results.masks[2][0]
    assert torch.all(mask["out"])  # left out of pruning
    pooled = counts["conv"] + counts["hidden"]
    assert mask_counts(mask)["conv"] + mask_counts(mask)["hidden"] == pooled - round(0.2 * pooled) - round(
        0.2 * (pooled - round(0.2 * pooled))
    )
    # trained weights of BN in the stored dense network: its running statistics moved
    dense = results.dense_weights[0]
    assert dense["bn.num_batches_tracked"].item() == 40 and not torch.equal(
        dense["bn.running_var"], torch.ones(8)
    )
    # resume: a second run trains nothing and reads the same records
    again = run(exp, cifar_shaped(), results_root=tmp_path, progress=False, training=False)
    assert again.records == results.records

    trained = export_ticket(results, level=2, weights="trained")  # the trained ticket, kept: a small network
    assert torch.equal(trained.bn.running_mean, results.trained_tickets[2][0]["bn.running_mean"])
    assert (
        torch.count_nonzero(trained.conv.weight[~mask["conv"]]) == 0 and trained.bn.num_batches_tracked == 40
    )

    ticket = export_ticket(results, level=2)
    assert isinstance(ticket, TinyBN)
    data = cifar_shaped()
    optimizer = torch.optim.SGD(ticket.parameters(), lr=0.05, momentum=0.9)
    first = None
    for step in range(30):  # a plain PyTorch loop
        batch = torch.randint(len(data.train_x), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(ticket(data.train_x[batch]), data.train_y[batch])
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for layer in ("conv", "hidden"):
        module = ticket.get_submodule(layer)
        assert torch.count_nonzero(module.weight[~mask[layer]]) == 0
        assert torch.equal(module.weight_mask.bool(), mask[layer])
    finished = export_ticket(results, level=2, finalize=True)
    plain = TinyBN()
    plain.load_state_dict(finished.state_dict())  # loads into the user's own module
    assert torch.count_nonzero(plain.conv.weight[~mask["conv"]]) == 0


def test_a_module_trains_stacked_as_it_does_alone_batch_norm_included(tiny_bn):
    """Stacked (torch.func.vmap over the module) and one at a time, each member computes
    the same arithmetic in other kernels, so the two agree to float rounding: after 20 SGD
    steps with warm-up and a drop, parameters and batch-norm statistics within 1e-4."""
    data = cifar_shaped()
    hparams = TrainingHparams(iterations=20, lr=0.05, batch_size=32, eval_every=10, eval_examples=100,
                              optimizer="sgd", momentum=0.9, weight_decay=1e-4, lr_drops=(15,), warmup=5,
                              augment=True)  # fmt: skip
    masks = [dense_mask(tiny_bn), random_prune(dense_mask(tiny_bn), torch.Generator().manual_seed(1))]
    members = [Member(initial_state(tiny_bn, seed), mask, seed) for seed, mask in zip((0, 1), masks)]
    together = train(tiny_bn, members, data, hparams)
    for m, joint in zip(members, together):
        [alone] = train(tiny_bn, [m], data, hparams)
        for key, value in alone.final_weights.items():
            torch.testing.assert_close(joint.final_weights[key], value, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(joint.curve["val_loss"], alone.curve["val_loss"], rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(together[1].final_weights["conv.weight"][~masks[1]["conv"]]) == 0


def test_sgd_warmup_and_drops_are_torch_optims(tiny_bn):
    """One member's steps against the plain module with torch.optim.SGD and LambdaLR:
    linear warm-up to lr over `warmup` steps (step t at (t + 1) / warmup), x0.1 at each drop."""
    data = cifar_shaped()
    hparams = TrainingHparams(iterations=12, lr=0.1, batch_size=16, optimizer="sgd", momentum=0.9,
                              weight_decay=1e-4, lr_drops=(6, 9), warmup=4)  # fmt: skip
    state = initial_state(tiny_bn, 0)
    ours = TrainStep.build(tiny_bn, [Member(state, dense_mask(tiny_bn), 0)], hparams)
    plain = TinyBN()
    plain.load_state_dict(state)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / 4) * 0.1 ** sum(t >= d for d in (6, 9))
    )
    for step in range(12):
        idx = torch.randint(0, len(data.train_x), (1, 16), generator=torch.Generator().manual_seed(step))
        ours(data.train_x, data.train_y, idx)
        assert ours.lr.item() == pytest.approx(schedule.get_last_lr()[0], rel=1e-6)
        loss = nn.functional.cross_entropy(plain(data.train_x[idx[0]]), data.train_y[idx[0]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(ours.network.member_tensors()[key][0], value, rtol=1e-4, atol=1e-5)


def test_augmentation_is_each_members_own_and_a_crop_and_flip():
    x = torch.rand(3, 5, 3, 32, 32)
    step = torch.zeros(())
    stacked_ = Augment([7, 8, 7], step)(x)
    alone = Augment([8], step)(x[1:2])
    assert torch.equal(stacked_[1], alone[0]) and not torch.equal(stacked_[0], stacked_[1])
    step += 1
    assert not torch.equal(Augment([8], step)(x[1:2]), alone)
    # every output image is the input shifted by at most 4 pixels (zeros where it leaves) and maybe mirrored
    for k in range(3):
        for b in range(5):
            out, image = stacked_[k, b], x[k, b]
            padded = nn.functional.pad(image, (4, 4, 4, 4))
            found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                     if torch.equal(out, (padded.flip(-1) if flip else padded)[:, dy:dy + 32, dx:dx + 32])]  # fmt: skip
            assert len(found) == 1


def test_global_pruning_pools_the_pruned_layers_and_leaves_the_others_whole():
    weights = {k: v for k, v in glorot_init("resnet20", 0).items() if k.endswith("weight") and v.dim() > 1}
    weights = {k.removesuffix(".weight"): v for k, v in weights.items()}
    exp = paper_experiment("resnet20")
    mask = magnitude_prune(weights, dense_mask("resnet20"), exp.rates, rounds=2, scope="global")
    pooled = [layer for layer, rate in exp.rates.items() if rate]
    total = sum(weights[layer].numel() for layer in pooled)
    assert sum(mask_counts({layer: mask[layer] for layer in pooled}).values()) == total - round(
        0.2 * total
    ) - round(0.2 * (total - round(0.2 * total)))
    assert all(torch.all(mask[layer]) for layer, rate in exp.rates.items() if not rate)
    threshold = min(weights[layer][mask[layer]].abs().min() for layer in pooled)
    assert all(
        torch.all(weights[layer][~mask[layer]].abs() <= threshold) for layer in pooled
    )  # one threshold
    counts = mask_counts(mask)
    assert len({counts[layer] / weights[layer].numel() for layer in pooled}) > 1  # the split floats


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_keeping_the_largest_breaks_ties_by_position_as_a_stable_sort(n):
    g = torch.Generator().manual_seed(n)
    for scores in (torch.randint(0, 3, (n,), generator=g).float() - 1, torch.rand(n, generator=g)):
        for keep in sorted({0, 1, n // 3, n - 1, n}):
            order = torch.sort(scores, descending=True, stable=True).indices[:keep]
            expected = torch.zeros(n, dtype=torch.bool)
            expected[order] = True
            assert torch.equal(_keep_largest(scores, keep), expected)


def test_a_changed_module_is_another_experiment(tiny_bn):
    before = paper_experiment(tiny_bn).identity()

    class Wider(TinyBN):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 5, padding=2)

    register_network(tiny_bn, dataclasses.replace(NETWORKS[tiny_bn], architecture=CustomNetwork(
        "cifar10", (3, 32, 32), Wider)), replace=True)  # fmt: skip
    assert paper_experiment(tiny_bn).identity() != before
    with pytest.raises(ValueError, match="registered already"):
        register_network(tiny_bn, NETWORKS[tiny_bn])
    with pytest.raises(ValueError, match="unpruned names layers"):
        paper_experiment(tiny_bn, unpruned=("bn",))
    with pytest.raises(ValueError, match="momentum and weight_decay are SGD's"):
        paper_experiment("conv2", momentum=0.9)
    with pytest.raises(ValueError, match="augment crops and flips images"):
        paper_experiment("lenet300", augment=True)


def test_module_init_is_the_modules_own_drawn_from_the_seed():
    network = CustomNetwork("cifar10", (3, 32, 32), TinyBN, init="module")
    register_network("tiny_module_init", NetworkProtocol(architecture=network, iterations=10, lr=0.1))
    try:
        a, b, c = (initial_state("tiny_module_init", seed) for seed in (0, 0, 1))
        assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["conv.weight"], c["conv.weight"])
        stack = stacked("tiny_module_init", 2)
        assert isinstance(stack, ModuleStack)
        stack.load_members([a, c])
        assert torch.equal(stack.member_states()[1]["conv.weight"], c["conv.weight"])
    finally:
        del NETWORKS["tiny_module_init"]


def test_a_modules_stability_interpolates_its_batch_statistics_too(tiny_bn, tmp_path):
    from lth_lib.stability import interpolate, stability

    exp = paper_experiment(tiny_bn, rounds=1, iterations=20, eval_examples=100)
    data = cifar_shaped()
    results = run(exp, data, results_root=tmp_path, progress=False)
    point = stability(results, level=1, data=data)
    assert len(point.errors) == 30 and point.instability >= 0
    pair = stacked(tiny_bn, 2)
    pair.load_members([results.trained_tickets[1][0], results.dense_weights[0]])
    line = interpolate(pair, 0, 1, points=3)
    middle = line.member_states()[1]
    ends = [results.trained_tickets[1][0], results.dense_weights[0]]
    torch.testing.assert_close(
        middle["bn.running_mean"], (ends[0]["bn.running_mean"] + ends[1]["bn.running_mean"]) / 2
    )
    assert middle["bn.num_batches_tracked"] == ends[0]["bn.num_batches_tracked"]


def test_section_4_is_queued_after_everything_else_at_paper_scale_only():
    from lth_lib.advance import queue

    paper = [exp.network for exp in queue("paper")]
    deep = [i for i, network in enumerate(paper) if network in ("resnet20", "vgg19")]
    assert deep == list(range(len(paper) - len(deep), len(paper))) and len(deep) == 5  # VGG's late rewinding
    assert not {exp.network for exp in queue("smoke")} & {
        "resnet20",
        "vgg19",
    }  # cannot resume from a portable store
