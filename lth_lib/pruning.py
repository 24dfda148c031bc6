"""Masks and pruning: layer-wise or global magnitude pruning, random pruning, reports.

A mask is a ``{layer name: bool tensor}`` dict for one network (no member dimension);
True marks a surviving weight. Biases are never pruned, so masks cover weights only.
Each round removes a fraction of the weights *still remaining*; the count removed from a
layer of n survivors is ``round(rate * n)`` (round half to even, as NumPy rounds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lth_lib.models import Network, architecture, count_prunable

Mask = dict[str, torch.Tensor]

# Per-round pruning rates of conv and fully connected layers (PAPER.md table; the
# authors' code). The output layer's rate follows from the fc rate: `output_rate`.
PAPER_RATES: dict[str, dict[str, float]] = {
    "lenet300": {"conv": 0.0, "fc": 0.2},
    "conv2": {"conv": 0.1, "fc": 0.2},
    "conv4": {"conv": 0.1, "fc": 0.2},
    "conv6": {"conv": 0.15, "fc": 0.2},
}


def output_rate(fc_rate: float) -> float:
    """The output layer's per-round rate when none is given: the paper prunes it at half
    the fully connected rate (the one place this rule is written)."""
    return fc_rate / 2


def check_rate(rate: float, what: str = "pruning rate") -> None:
    """Raise unless 0 < rate < 1."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {rate}")


def layer_rates(
    network: str, conv: float | None = None, fc: float | None = None, output: float | None = None
) -> dict[str, float]:
    """Per-layer rates for `network`: the paper's, or conv/fc/output overrides (the
    output layer's default follows the fc rate, see `output_rate`)."""
    arch = architecture(network)
    paper = PAPER_RATES[network]
    fc = paper["fc"] if fc is None else fc
    conv = paper["conv"] if conv is None else conv
    output = output_rate(fc) if output is None else output
    rates = {}
    for layer in count_prunable(network):
        if layer.startswith("conv"):
            rates[layer] = conv
        else:
            rates[layer] = output if layer == f"fc{len(arch.fc)}" else fc
    for layer, rate in rates.items():
        check_rate(rate, f"pruning rate of {layer}")
    return rates


def surviving_counts(counts: dict[str, int], rates: dict[str, float], rounds: int = 1) -> dict[str, int]:
    """Weights left in each layer after `rounds` rounds starting from `counts` survivors."""
    counts = dict(counts)
    for _ in range(rounds):
        counts = {layer: n - round(rates[layer] * n) for layer, n in counts.items()}
    return counts


def dense_mask(network: str) -> Mask:
    """A mask keeping every weight of one member of `network`."""
    return {layer: torch.ones(w.shape[1:], dtype=torch.bool) for layer, w in Network(network).prunable().items()}


def mask_counts(mask: Mask) -> dict[str, int]:
    """Surviving weights per layer."""
    return {layer: int(m.sum()) for layer, m in mask.items()}


def remaining_fraction(mask: Mask) -> float:
    """Fraction of all prunable weights that survive."""
    return sum(mask_counts(mask).values()) / sum(m.numel() for m in mask.values())


def _keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of the `keep` largest scores (ties broken by position, deterministically)."""
    order = torch.sort(scores.flatten(), descending=True, stable=True).indices[:keep]
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[order] = True
    return flat.view(scores.shape)


def _scores(weights: dict[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """|w| on survivors, -1 on pruned weights (so they are never kept again)."""
    return {
        layer: torch.where(mask[layer].to(w.device), w.detach().abs(), torch.tensor(-1.0, device=w.device)).cpu()
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
    scope="global": all layers share one threshold; the total kept is that of `rounds`
    rounds at the fully connected rate (taken from the first fc layer's rate).
    """
    scores = _scores(weights, mask)
    if scope == "layer":
        keep = surviving_counts(mask_counts(mask), rates, rounds)
        return {layer: _keep_largest(scores[layer], keep[layer]) for layer in scores}
    if scope == "global":
        rate = rates["fc1"]
        total = {"all": sum(mask_counts(mask).values())}
        keep = surviving_counts(total, {"all": rate}, rounds)["all"]
        flat = torch.cat([s.flatten() for s in scores.values()])
        kept = _keep_largest(flat, keep).split([s.numel() for s in scores.values()])
        return {layer: k.view(scores[layer].shape) for layer, k in zip(scores, kept)}
    raise ValueError(f"unknown pruning scope {scope!r}; use 'layer' or 'global'")


def random_prune(mask: Mask, generator: torch.Generator) -> Mask:
    """A mask with the same per-layer counts as `mask`, at uniformly random positions."""
    counts = mask_counts(mask)
    return {
        layer: _keep_largest(torch.rand(m.shape, generator=generator), counts[layer])
        for layer, m in mask.items()
    }


def sparsity_report(mask: Mask) -> str:
    """A fixed-width table of total and surviving weights per layer, and overall."""
    rows = [f"{'layer':<8}{'weights':>12}{'remaining':>12}{'percent':>9}"]
    for layer, m in mask.items():
        n, left = m.numel(), int(m.sum())
        rows.append(f"{layer:<8}{n:>12,}{left:>12,}{100 * left / n:>8.1f}%")
    total = sum(m.numel() for m in mask.values())
    left = sum(mask_counts(mask).values())
    rows.append(f"{'total':<8}{total:>12,}{left:>12,}{100 * left / total:>8.1f}%")
    return "\n".join(rows)


def save_mask(mask: Mask, path: str | Path) -> None:
    """Write a mask to `path` (a torch file of bool tensors)."""
    torch.save({layer: m.cpu() for layer, m in mask.items()}, path)


def load_mask(path: str | Path) -> Mask:
    """Read a mask written by `save_mask`."""
    return torch.load(path, weights_only=True)


def pack_mask(mask: Mask) -> dict:
    """A mask as bit-packed uint8 tensors (8x smaller on disk), with each layer's shape."""
    return {
        layer: (torch.from_numpy(np.packbits(m.cpu().numpy().ravel())), tuple(m.shape)) for layer, m in mask.items()
    }


def unpack_mask(packed: dict) -> Mask:
    """The mask `pack_mask` packed."""
    out = {}
    for layer, (bits, shape) in packed.items():
        n = int(np.prod(shape))
        out[layer] = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool)).view(shape)
    return out
