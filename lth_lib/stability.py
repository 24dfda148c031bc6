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

from lth_lib.data import Dataset
from lth_lib.models import Network
from lth_lib.protocol import INTERPOLATION_POINTS
from lth_lib.results import Results
from lth_lib.seeding import derive_seed
from lth_lib.train import Member, test_subset, train

EVAL_CHUNK = 4096  # examples a line's networks evaluate at once (bounds memory)


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


@torch.no_grad()
def error_rates(network: Network, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Each member's error rate on the examples `x` (shared by all members), labels `y`."""
    wrong = torch.zeros(network.members, device=x.device)
    for start in range(0, len(x), max(1, EVAL_CHUNK // network.members)):
        part = slice(start, start + max(1, EVAL_CHUNK // network.members))
        wrong += (network(x[part]).argmax(-1) != y[part]).sum(1)
    return (wrong / len(x)).tolist()


def interpolation_errors(
    network: Network, first: int, second: int, x: torch.Tensor, y: torch.Tensor, points: int = INTERPOLATION_POINTS
) -> list[float]:
    """The error on (x, y) at `points` evenly spaced points of the line from member `first`
    to member `second` of a stacked `network`."""
    return error_rates(interpolate(network, first, second, points), x, y)


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
    masks, start = results.masks.get(level), results.rewind_weights
    if masks is None or start is None:
        raise ValueError(f"these results do not keep the mask of level {level} or the weights at iteration k")
    seed, k = exp.seeds[trial], exp.pruning.rewind_iteration
    copies = [Member(start[trial], masks[trial], seed, derive_seed(seed, f"stability/copy{c}")) for c in (0, 1)]
    trained = train(exp.network, copies, data, exp.training, start_iteration=k)
    pair = Network(exp.network, members=2).to(data.test_x.device)
    pair.load_members([r.final_weights for r in trained])
    idx = test_subset(len(data.test_x), exp.training.eval_examples).to(data.test_x.device)
    errors = interpolation_errors(pair, 0, 1, data.test_x[idx], data.test_y[idx])
    return Stability(k, level, results.percent_remaining(level), errors)
