"""Stability to SGD noise (Frankle, Dziugaite, Roy & Carbin 2020, *Linear Mode
Connectivity and the Lottery Ticket Hypothesis*).

From the weights W_k at iteration k (with a ticket's mask, or dense), train two copies
that differ only in their data order (and dropout masks); evaluate the test error of
(1 - a) W_1 + a W_2 at evenly spaced a in [0, 1]. The *instability* is the largest
error on that line minus the mean of the two ends' errors: near 0 when the two copies
end in one linearly connected minimum (the protocol's constants: `lth_lib.protocol`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lth_lib.data import Dataset, test_subset
from lth_lib.models import Network
from lth_lib.protocol import INTERPOLATION_POINTS
from lth_lib.results import Results
from lth_lib.seeding import derive_seed
from lth_lib.train import Member, evaluate, train


def interpolate(network: Network, first: int, second: int, points: int = INTERPOLATION_POINTS) -> Network:
    """A `points`-member network whose member i is (1 - a_i) W_first + a_i W_second, with
    a_i evenly spaced from 0 to 1 (member 0 is `first`, the last is `second`)."""
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    alphas = torch.linspace(0, 1, points)
    line = Network(network.name, members=points).to(next(network.parameters()).device)
    with torch.no_grad():
        for ours, p in zip(line.parameters(), network.parameters()):
            a = alphas.to(p.device).view(-1, *[1] * (p.dim() - 1))
            ours.copy_((1 - a) * p[first] + a * p[second])
    return line


def error_rates(network: Network, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor | None = None
                ) -> list[float]:  # fmt: skip
    """Each member's error rate on the examples `idx` (default: all) of (x_all, y_all),
    shared by all members (`train.evaluate`, as training evaluates)."""
    idx = torch.arange(len(x_all), device=x_all.device) if idx is None else idx
    _, correct = evaluate(network, x_all, y_all, idx)
    return ((idx.shape[-1] - correct) / idx.shape[-1]).tolist()


def interpolation_errors(network: Network, first: int, second: int, x_all: torch.Tensor, y_all: torch.Tensor,
                         idx: torch.Tensor | None = None, points: int = INTERPOLATION_POINTS) -> list[float]:  # fmt: skip
    """The error on the examples `idx` (default: all) of (x_all, y_all) at `points` evenly
    spaced points of the line from member `first` to member `second` of a stacked `network`."""
    return error_rates(interpolate(network, first, second, points), x_all, y_all, idx)


def instability(errors: list[float]) -> float:
    """The largest error on the line minus the mean of its two ends' errors."""
    return max(errors) - (errors[0] + errors[-1]) / 2


@dataclass
class Stability:
    """Two copies trained from the same weights at iteration k, and the line between them."""

    rewind_iteration: int  # k
    level: int  # the ticket's level (0: the dense network)
    percent_remaining: float
    errors: list[float]  # test error along the line, INTERPOLATION_POINTS points

    @property
    def instability(self) -> float:
        """The error barrier on the line (`instability`)."""
        return instability(self.errors)


def stability(results: Results, level: int, data: Dataset, trial: int = 0) -> Stability:
    """Train two copies of trial `trial`'s ticket at `level` (0: the dense network) from
    its weights at the experiment's rewind iteration k to the end, with data orders of
    their own, and measure the test error on the line between them (on the test examples
    the experiment evaluates on). Both copies train as one stack, on `data`'s device."""
    exp = results.experiment
    if level not in results.masks:
        raise ValueError(f"level must be one of {sorted(results.masks)}, got {level}")
    mask, start = results.masks[level][trial], results.rewind_weights[trial]
    seed, k = exp.seeds[trial], exp.pruning.rewind_iteration
    copies = [Member(start, mask, seed, derive_seed(seed, f"stability/copy{c}")) for c in (0, 1)]
    trained = train(exp.network, copies, data, exp.training, start_iteration=k)
    pair = Network(exp.network, members=2).to(data.test_x.device)
    pair.load_members([r.final_weights for r in trained])
    idx = test_subset(len(data.test_x), exp.training.eval_examples).to(data.test_x.device)
    errors = interpolation_errors(pair, 0, 1, data.test_x, data.test_y, idx)
    return Stability(k, level, results.percent_remaining(level), errors)
