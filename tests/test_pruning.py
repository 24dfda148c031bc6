import pytest
import torch
from helpers import initialized_network

from lth_lib.models import count_prunable
from lth_lib.protocol import paper_experiment
from lth_lib.pruning import (
    dense_mask,
    magnitude_prune,
    mask_counts,
    random_prune,
    remaining_fraction,
    surviving_counts,
)


def layer_rates(network: str, **overrides) -> dict[str, float]:
    return paper_experiment(network, **overrides).rates


def trained_like_weights(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    net = initialized_network(name, seed)
    return {layer: w[0].detach() for layer, w in net.prunable().items()}


def test_paper_rates_output_layer_at_half_the_fc_rate():
    assert layer_rates("lenet300") == {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    assert layer_rates("conv6") == {
        **{f"conv{i}": 0.15 for i in range(1, 7)},
        "fc1": 0.2,
        "fc2": 0.2,
        "fc3": 0.1,
    }
    assert layer_rates("conv2", fc_rate=0.4)["fc3"] == 0.2


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_rates_outside_open_unit_interval_are_rejected(rate):
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        layer_rates("lenet300", fc_rate=rate)


def test_lenet_remaining_percentages_are_the_papers_labels():
    counts, rates = count_prunable("lenet300"), layer_rates("lenet300")
    shown = {
        k: round(100 * sum(surviving_counts(counts, rates, k).values()) / 266_200, 1)
        for k in (3, 7, 9, 15, 18, 20)
    }
    assert shown == {3: 51.3, 7: 21.1, 9: 13.5, 15: 3.6, 18: 1.9, 20: 1.2}


@pytest.mark.parametrize("name", ["lenet300", "conv2"])
def test_one_round_removes_exactly_the_expected_count_per_layer(name):
    mask = magnitude_prune(trained_like_weights(name), dense_mask(name), layer_rates(name))
    for layer, total in count_prunable(name).items():
        rate = layer_rates(name)[layer]
        assert mask_counts(mask)[layer] == total - round(rate * total)
    assert mask_counts(mask)["fc3"] == count_prunable(name)["fc3"] * 9 // 10  # output at half rate


def test_magnitude_pruning_removes_the_smallest_survivors_by_absolute_value():
    w = {"fc1": torch.tensor([[-5.0, 0.1, -0.2, 3.0, 0.05]])}
    mask = {"fc1": torch.tensor([[True, True, True, True, False]])}
    pruned = magnitude_prune(w, mask, {"fc1": 0.5})  # 4 survivors, remove round(2.0) = 2
    assert pruned["fc1"].tolist() == [[True, False, False, True, False]]  # negatives kept by |w|


def test_a_second_round_only_prunes_survivors():
    name = "lenet300"
    w, rates = trained_like_weights(name), layer_rates(name)
    first = magnitude_prune(w, dense_mask(name), rates)
    second = magnitude_prune(w, first, rates)
    for layer in first:
        assert not (second[layer] & ~first[layer]).any()
    assert mask_counts(second) == surviving_counts(count_prunable(name), rates, 2)


@pytest.mark.parametrize("name,rounds", [("lenet300", 7), ("conv4", 3)])
def test_one_shot_has_the_counts_of_n_iterative_rounds(name, rounds):
    rates = layer_rates(name)
    iterative = dense_mask(name)
    for r in range(rounds):
        iterative = magnitude_prune(trained_like_weights(name, seed=r), iterative, rates)
    one_shot = magnitude_prune(trained_like_weights(name), dense_mask(name), rates, rounds=rounds)
    assert mask_counts(one_shot) == mask_counts(iterative)
    for layer, total in count_prunable(name).items():  # each layer at 1 - (1 - p)^n pruned
        assert abs(mask_counts(one_shot)[layer] / total - (1 - rates[layer]) ** rounds) < 2 / total * rounds


def test_global_pruning_keeps_the_largest_weights_across_layers():
    w = trained_like_weights("lenet300")
    mask = magnitude_prune(w, dense_mask("lenet300"), layer_rates("lenet300"), scope="global")
    assert sum(mask_counts(mask).values()) == 266_200 - round(0.2 * 266_200)
    kept_min = min(w[k][mask[k]].abs().min() for k in w)
    pruned_max = max(w[k][~mask[k]].abs().max() for k in w)
    assert kept_min >= pruned_max
    with pytest.raises(ValueError, match="unknown pruning scope"):
        magnitude_prune(w, mask, layer_rates("lenet300"), scope="unit")


def test_random_pruning_matches_magnitude_counts_at_other_positions():
    name = "conv2"
    magnitude = magnitude_prune(trained_like_weights(name), dense_mask(name), layer_rates(name), rounds=3)
    random = random_prune(magnitude, torch.Generator().manual_seed(0))
    assert mask_counts(random) == mask_counts(magnitude)
    assert not torch.equal(random["fc1"], magnitude["fc1"])
    again = random_prune(magnitude, torch.Generator().manual_seed(0))
    assert all(torch.equal(random[k], again[k]) for k in random)


def test_one_round_keeps_80_percent_of_lenet():
    mask = magnitude_prune(trained_like_weights("lenet300"), dense_mask("lenet300"), layer_rates("lenet300"))
    assert mask_counts(mask) == {"fc1": 188_160, "fc2": 24_000, "fc3": 900}
    assert abs(remaining_fraction(mask) - 213_060 / 266_200) < 1e-12
