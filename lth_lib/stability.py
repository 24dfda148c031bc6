"""Stability to SGD noise (Frankle, Dziugaite, Roy & Carbin 2020, *Linear Mode
Connectivity and the Lottery Ticket Hypothesis*).

From the weights W_k at iteration k (with a ticket's mask, or dense), train two copies
that differ only in their data order (and dropout masks); evaluate the test error of
(1 - a) W_1 + a W_2 at evenly spaced a in [0, 1]. The *instability* is the largest
error on that line minus the mean of the two ends' errors: near 0 when the two copies
end in one linearly connected minimum (the protocol's constants: `lth_lib.protocol`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lth_lib.data import Dataset, load_dataset, test_subset
from lth_lib.models import ModuleStack, Network, stacked
from lth_lib.paths import atomic_write
from lth_lib.protocol import INTERPOLATION_POINTS, architecture, training_precision
from lth_lib.results import Results
from lth_lib.schedule import default_max_members
from lth_lib.seeding import derive_seed
from lth_lib.train import Member, default_device, device_name, evaluate, kernels, train


def interpolate(network: Network | ModuleStack, first: int, second: int, points: int = INTERPOLATION_POINTS
                ) -> Network | ModuleStack:  # fmt: skip
    """A `points`-member network whose member i is (1 - a_i) W_first + a_i W_second, with
    a_i evenly spaced from 0 to 1 (member 0 is `first`, the last is `second`). A module's
    floating-point buffers (batch normalisation's running statistics) are interpolated
    alike; integer ones (its batch count) are `first`'s."""
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    alphas = torch.linspace(0, 1, points)
    line = stacked(network.name, members=points).to(next(network.parameters()).device)
    with torch.no_grad():
        ends = network.member_tensors()
        for name, ours in line.member_tensors().items():
            p = ends[name]
            if not p.is_floating_point():
                ours.copy_(p[first].expand_as(ours))
                continue
            a = alphas.to(p.device).view(-1, *[1] * (p.dim() - 1))
            ours.copy_((1 - a) * p[first] + a * p[second])
    return line


def error_rates(network: Network | ModuleStack, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor | None = None
                ) -> list[float]:  # fmt: skip
    """Each member's error rate on the examples `idx` (default: all) of (x_all, y_all),
    shared by all members (`train.evaluate`, as training evaluates)."""
    idx = torch.arange(len(x_all), device=x_all.device) if idx is None else idx
    _, correct = evaluate(network, x_all, y_all, idx)
    return ((idx.shape[-1] - correct) / idx.shape[-1]).tolist()


def interpolation_errors(network: Network | ModuleStack, first: int, second: int, x_all: torch.Tensor, y_all: torch.Tensor,
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
    copies: list[dict] = field(default_factory=list, repr=False)  # each copy's early stop and curve
    trained: dict = field(default_factory=dict, repr=False)  # seconds, networks at once, device, torch

    @property
    def instability(self) -> float:
        """The error barrier on the line (`instability`)."""
        return instability(self.errors)


def stability(results: Results, level: int, data: Dataset | None = None, trial: int = 0, *,
              data_root: str | Path | None = None, device: str | torch.device | None = None,
              max_members: int | None = None, training: bool = True) -> Stability | None:  # fmt: skip
    """Train two copies of trial `trial`'s ticket at `level` (0: the dense network) from
    its weights at the experiment's rewind iteration k to the end, with data orders of
    their own, and measure the test error on the line between them (on the test examples
    the experiment evaluates on).

    Kept like a level in the experiment's results folder (`stability/`), and read back from
    there without training; a torn or corrupted file is trained again. Training runs on
    `data` (else the data set loaded from `data_root` onto `device`, default where `run`
    trains), `max_members` copies at once (default `schedule.default_max_members`: on a
    CPU a convolutional network's copies one at a time). Without `training`, None where
    nothing is stored."""
    exp = results.experiment
    if level not in results.masks:
        raise ValueError(f"level must be one of {sorted(results.masks)}, got {level}")
    path = (
        results.directory / "stability" / f"level_{level:03d}-trial_{trial}.json"
        if results.directory
        else None
    )
    stored = _read(path, level, exp.pruning.rewind_iteration) if path is not None else None
    if stored is not None or not training:
        return stored
    if data is None:
        data = load_dataset(architecture(exp.network).dataset, data_root, default_device(device))
    max_members = default_max_members(exp.network, data.test_x.device) if max_members is None else max_members
    mask, start = results.masks[level][trial], results.rewind_weights[trial]
    seed, k = exp.seeds[trial], exp.pruning.rewind_iteration
    copies = [Member(start, mask, seed, derive_seed(seed, f"stability/copy{c}")) for c in (0, 1)]
    where = data.test_x.device
    precision = training_precision(exp.network, where.type)
    started = time.monotonic()
    trained = [r for at in range(0, 2, max_members)
               for r in train(exp.network, copies[at : at + max_members], data, exp.training, start_iteration=k,
                              precision=precision)]  # fmt: skip
    pair = stacked(exp.network, members=2).to(where)
    pair.load_members([r.final_weights for r in trained])
    idx = test_subset(len(data.test_x), exp.training.eval_examples).to(where)
    with kernels(precision, where):
        errors = interpolation_errors(pair, 0, 1, data.test_x, data.test_y, idx)
    how = {"seconds": round(time.monotonic() - started, 1), "at_once": min(2, max_members),
           "device": device_name(where), "torch": str(torch.__version__), "precision": precision}  # fmt: skip
    copy_records = [{"early_stop_iteration": r.early_stop_iteration, "early_stop_test_acc": r.early_stop_test_acc,
                     "final_test_acc": r.final_test_acc, "curve": r.curve} for r in trained]  # fmt: skip
    measured = Stability(k, level, results.percent_remaining(level), errors, copy_records, how)
    if path is not None:
        _write(path, measured)
    return measured


def _write(path: Path, measured: Stability) -> None:
    """Keep `measured` as JSON that vouches for itself (the sha256 of its content)."""
    content = {"points": INTERPOLATION_POINTS, **dataclasses.asdict(measured)}
    body = json.dumps(content, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"sha256": hashlib.sha256(body.encode()).hexdigest(), "stability": content}
    atomic_write(path, json.dumps(payload).encode())


def _read(path: Path, level: int, rewind_iteration: int) -> Stability | None:
    """The stability kept at `path`, None if it is missing, torn, corrupted or not this one."""
    try:
        payload = json.loads(path.read_text())
        content = payload["stability"]
        if hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest() != payload["sha256"]:
            return None
        if (content.pop("points"), content["level"], content["rewind_iteration"]) != (
            INTERPOLATION_POINTS,
            level,
            rewind_iteration,
        ):
            return None
        return Stability(**content)
    except (OSError, ValueError, KeyError, TypeError):
        return None
