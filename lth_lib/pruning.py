"""Masks and pruning: layer-wise or global magnitude pruning, random pruning, the schedule.

A mask is a ``{layer name: bool tensor}`` dict for one network (no member dimension);
True marks a surviving weight. Biases are never pruned, so masks cover weights only.
Each round removes a fraction of the weights *still remaining*; the count removed from a
layer of n survivors is ``round(rate * n)`` (round half to even, as NumPy rounds).
"""

from __future__ import annotations

import numpy as np
import torch

from lth_lib.models import State, count_prunable, layer_weights, weight_shapes
from lth_lib.protocol import Experiment

Mask = dict[str, torch.Tensor]


def surviving_counts(counts: dict[str, int], rates: dict[str, float], rounds: int = 1) -> dict[str, int]:
    """Weights left in each layer after `rounds` rounds starting from `counts` survivors."""
    counts = dict(counts)
    for _ in range(rounds):
        counts = {layer: n - round(rates[layer] * n) for layer, n in counts.items()}
    return counts


def dense_mask(network: str) -> Mask:
    """A mask keeping every weight of one member of `network`."""
    return {layer: torch.ones(shape, dtype=torch.bool) for layer, shape in weight_shapes(network).items()}


def mask_counts(mask: Mask) -> dict[str, int]:
    """Surviving weights per layer."""
    return {layer: int(m.sum()) for layer, m in mask.items()}


def remaining_fraction(mask: Mask) -> float:
    """Fraction of all prunable weights that survive."""
    return sum(mask_counts(mask).values()) / sum(m.numel() for m in mask.values())


def _keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of the `keep` largest scores, ties broken by position (the earlier kept),
    deterministically: the scores above the keep-th largest, then the first of those equal
    to it (what a stable descending sort would keep, without sorting: O(n))."""
    flat = scores.flatten()
    if keep <= 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if keep >= flat.numel():
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    threshold = torch.kthvalue(flat, flat.numel() - keep + 1).values
    above, tied = flat > threshold, flat == threshold
    tied &= torch.cumsum(tied, 0) <= keep - int(above.sum())
    return (above | tied).view(scores.shape)


def _scores(weights: dict[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """|w| on survivors, -1 on pruned weights (so they are never kept again)."""
    return {
        layer: torch.where(
            mask[layer].to(w.device), w.detach().abs(), torch.tensor(-1.0, device=w.device)
        ).cpu()
        for layer, w in weights.items()
    }


def magnitude_prune(
    weights: dict[str, torch.Tensor],
    mask: Mask,
    rates: dict[str, float],
    rounds: int = 1,
    scope: str = "layer",
) -> Mask:
    """Prune the smallest-magnitude survivors of `mask`, by the weights in `weights`.

    scope="layer": each layer loses what `rounds` rounds at its own rate would remove, so
    one call with rounds=n keeps exactly the per-layer counts of n iterative rounds.
    scope="global": the layers pruned at all (rate above 0) share one threshold; the total
    they keep is that of `rounds` rounds at the largest of their rates (the fully
    connected rate of the paper's Section 2-3 networks; Section 4's conv rate, its output
    layer left out at rate 0). Layers at rate 0 keep every weight.
    """
    scores = _scores(weights, mask)
    if scope == "layer":
        keep = surviving_counts(mask_counts(mask), rates, rounds)
        return {layer: _keep_largest(scores[layer], keep[layer]) for layer in scores}
    if scope == "global":
        pooled = [layer for layer in scores if rates[layer] > 0]
        total = {"all": sum(mask_counts({layer: mask[layer] for layer in pooled}).values())}
        keep = surviving_counts(total, {"all": max(rates[layer] for layer in pooled)}, rounds)["all"]
        flat = torch.cat([scores[layer].flatten() for layer in pooled])
        kept = dict(zip(pooled, _keep_largest(flat, keep).split([scores[layer].numel() for layer in pooled])))
        return {layer: kept[layer].view(scores[layer].shape) if layer in kept else mask[layer].clone()
                for layer in scores}  # fmt: skip
    raise ValueError(f"unknown pruning scope {scope!r}; use 'layer' or 'global'")


def prune_tickets(exp: Experiment, weights: list[State], masks: list[Mask], rounds: int = 1) -> list[Mask]:
    """Each trial's next ticket mask: `rounds` rounds of `exp`'s magnitude pruning of its
    trained weights (member states), from its mask `masks`."""
    return [
        magnitude_prune(layer_weights(exp.network, w), m, exp.rates, rounds, exp.pruning.scope)
        for w, m in zip(weights, masks)
    ]


def random_prune(mask: Mask, generator: torch.Generator) -> Mask:
    """A mask with the same per-layer counts as `mask`, at uniformly random positions."""
    counts = mask_counts(mask)
    return {
        layer: _keep_largest(torch.rand(m.shape, generator=generator), counts[layer])
        for layer, m in mask.items()
    }


def pack_mask(mask: Mask) -> dict:
    """A mask as bit-packed uint8 tensors (8x smaller on disk), with each layer's shape."""
    return {
        layer: (torch.from_numpy(np.packbits(m.cpu().numpy().ravel())), tuple(m.shape))
        for layer, m in mask.items()
    }


def unpack_mask(packed: dict) -> Mask:
    """The mask `pack_mask` packed."""
    out = {}
    for layer, (bits, shape) in packed.items():
        n = int(np.prod(shape))
        out[layer] = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool)).view(shape)
    return out


def pruning_schedule(exp: Experiment) -> str:
    """The weights each layer keeps at every level of `exp`, as a fixed-width table.

    Layer-wise pruning keeps exactly these counts. Global pruning keeps the same total but
    lets the split between its layers float, so its table has one column for the layers
    it pools and one for those it leaves whole."""
    counts = count_prunable(exp.network)
    rates = exp.rates
    if exp.pruning.scope == "global":
        pooled = [layer for layer in counts if rates[layer] > 0]
        whole = [layer for layer in counts if rates[layer] == 0]
        rate = max(rates[layer] for layer in pooled)
        sums = {"pruned": pooled, "not pruned": whole}
        counts = {column: sum(counts[layer] for layer in layers) for column, layers in sums.items() if layers}
        rates = {"pruned": rate, "not pruned": 0.0}
        header = f"global: {len(pooled)} layers pooled at {rate:g} per round" + (
            f"; not pruned: {', '.join(whole)}" if whole else ""
        )
    else:
        header = "rates per round: " + ", ".join(f"{layer} {rate:g}" for layer, rate in rates.items())
    layers = list(counts)
    rows = [f"{'level':>5}" + "".join(f"{layer:>11}" for layer in layers) + f"{'total':>11}{'percent':>9}"]
    total = sum(counts.values())
    for level in range(exp.pruning.rounds + 1):
        left = surviving_counts(counts, rates, level)
        kept = sum(left.values())
        rows.append(
            f"{level:>5}"
            + "".join(f"{left[layer]:>11,}" for layer in layers)
            + f"{kept:>11,}{100 * kept / total:>8.2f}%"
        )
    return header + "\n" + "\n".join(rows)
