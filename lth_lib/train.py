"""Training K masked networks at once, with the paper's early-stopping bookkeeping.

The data set lives as tensors on the device and batches are drawn by index, so a step
is a gather, one forward/backward through the stacked members, a fused Adam step and a
foreach multiply that keeps pruned weights exactly zero. Metrics are read back to the
host only at evaluation points. The loss is the sum over members of each member's mean
cross-entropy, and Adam is elementwise, so every member trains exactly as it would
alone (tests/test_train.py checks this against one-by-one training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lth_lib.data import Dataset, validation_split
from lth_lib.models import Network
from lth_lib.pruning import Mask
from lth_lib.seeding import generator

State = dict[str, torch.Tensor]

# The paper's protocol per network: (iterations, Adam learning rate); batch 60 for all.
PAPER_PROTOCOL: dict[str, tuple[int, float]] = {
    "lenet300": (50_000, 1.2e-3),
    "conv2": (20_000, 2e-4),
    "conv4": (25_000, 3e-4),
    "conv6": (30_000, 3e-4),
}
CURVE_KEYS = ("iteration", "val_loss", "val_acc", "test_loss", "test_acc")


@dataclass(frozen=True)
class TrainingHparams:
    """How one network is trained. `paper_training(name)` gives the paper's values."""

    iterations: int  # optimiser steps (the paper: 50K LeNet, 20K/25K/30K Conv-2/4/6)
    lr: float  # Adam learning rate
    batch_size: int = 60
    eval_every: int = 100  # evaluate validation and test every this many iterations
    eval_examples: int | None = None  # evaluate on a random subset this big (None: all)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.eval_examples is not None and self.eval_examples <= 0:
            raise ValueError(f"eval_examples must be positive or None, got {self.eval_examples}")


def paper_training(network: str, **overrides) -> TrainingHparams:
    """The paper's training hyperparameters for `network`, with any field overridden."""
    from lth_lib.models import architecture

    architecture(network)  # a clear error for an unknown name
    iterations, lr = PAPER_PROTOCOL[network]
    return TrainingHparams(**{"iterations": iterations, "lr": lr, **overrides})


@dataclass
class Member:
    """One network to train: its initial parameters, its mask and its data seed."""

    weights: State  # initial parameters of one member (as `Network.member_state` gives)
    mask: Mask
    data_seed: int  # determines the validation split and the data order


@dataclass
class TrainResult:
    """What training one member produced."""

    curve: dict[str, list[float]]  # CURVE_KEYS -> values at each evaluation point
    early_stop_iteration: int  # iteration of minimum validation loss
    early_stop_val_loss: float
    early_stop_val_acc: float
    early_stop_test_acc: float  # test accuracy at the early-stop iteration
    final_test_acc: float  # test accuracy at the end of training
    final_weights: State = field(repr=False)
    snapshot: State | None = field(default=None, repr=False)  # weights at `snapshot_iteration`


def early_stop(curve: dict[str, list[float]]) -> dict[str, float]:
    """The paper's early-stopping read-out of one member's curve: the iteration of minimum
    validation loss (the first, if it repeats) and the metrics there."""
    val_loss = curve["val_loss"]
    if not val_loss:
        raise ValueError("empty validation-loss curve")
    best = min(range(len(val_loss)), key=lambda i: (val_loss[i], i))
    return {
        "early_stop_iteration": curve["iteration"][best],
        "early_stop_val_loss": val_loss[best],
        "early_stop_val_acc": curve["val_acc"][best],
        "early_stop_test_acc": curve["test_acc"][best],
    }


def train(
    network_name: str,
    members: list[Member],
    data: Dataset,
    hparams: TrainingHparams,
    start_iteration: int = 0,
    snapshot_iteration: int | None = None,
    progress: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> list[TrainResult]:
    """Train `members` together on `data` (on data's device) from `start_iteration`.

    Training runs to `hparams.iterations` (a rewound ticket resumes at its rewind
    iteration). `snapshot_iteration` keeps each member's weights at that iteration.
    `progress(iteration, metrics)` is called at each evaluation point.
    """
    if not 0 <= start_iteration < hparams.iterations:
        raise ValueError(f"start_iteration must be in [0, {hparams.iterations}), got {start_iteration}")
    device = data.train_x.device
    k, batch = len(members), hparams.batch_size
    network = Network(network_name, members=k).to(device)
    network.load_members([m.weights for m in members])
    layers = list(network.prunable())
    weights = [network.prunable()[layer] for layer in layers]
    masks = [torch.stack([m.mask[layer] for m in members]).to(device, torch.float32) for layer in layers]
    with torch.no_grad():
        torch._foreach_mul_(weights, masks)
    optimizer = torch.optim.Adam(network.parameters(), lr=hparams.lr, fused=True)

    splits = [validation_split(len(data.train_x), m.data_seed) for m in members]
    train_idx = torch.stack([s[0] for s in splits])
    val_idx = torch.stack([s[1] for s in splits])[:, : hparams.eval_examples].to(device)
    test_idx = torch.randperm(len(data.test_x), generator=generator(0, "test-subset"))[: hparams.eval_examples]
    test_idx = test_idx.sort().values.to(device)
    batches = _batch_indices(train_idx, [m.data_seed for m in members], batch, start_iteration, device)

    curve: dict[str, list[list[float]]] = {key: [] for key in CURVE_KEYS}
    snapshot = None
    for iteration in range(start_iteration, hparams.iterations + 1):
        if iteration == snapshot_iteration:
            snapshot = [network.member_state(i) for i in range(k)]
        if iteration % hparams.eval_every == 0 or iteration == hparams.iterations:
            _record(curve, iteration, _evaluate(network, data, val_idx, test_idx))
            if progress is not None:
                progress(iteration, {key: values[-1] for key, values in curve.items()})
        if iteration == hparams.iterations:
            break
        idx = next(batches)
        logits = network(data.train_x[idx])
        loss = F.cross_entropy(logits.flatten(0, 1), data.train_y[idx].flatten(), reduction="sum") / batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)
    return [_result(curve, i, network.member_state(i), snapshot[i] if snapshot else None) for i in range(k)]


def _batch_indices(train_idx: torch.Tensor, seeds: list[int], batch: int, start: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Yield [K, batch] example indices: each member reshuffles its own split every epoch.

    Batches that would straddle an epoch's end are dropped. Starting at `start` gives the
    same batches as starting at 0 and skipping `start` of them.
    """
    gens = [generator(seed, "order") for seed in seeds]
    per_epoch = train_idx.shape[1] // batch
    epoch, offset = divmod(start, per_epoch)
    for _ in range(epoch):
        for g in gens:
            torch.randperm(train_idx.shape[1], generator=g)
    while True:
        perm = torch.stack([row[torch.randperm(len(row), generator=g)] for row, g in zip(train_idx, gens)])
        perm = perm[:, : per_epoch * batch].to(device).view(len(seeds), per_epoch, batch)
        for step in range(offset, per_epoch):
            yield perm[:, step]
        offset = 0


@torch.no_grad()
def _evaluate(network: Network, data: Dataset, val_idx: torch.Tensor, test_idx: torch.Tensor) -> list[torch.Tensor]:
    """Per-member [val_loss, val_acc, test_loss, test_acc] as four [K] tensors (on device)."""
    chunk = max(1, 4096 // network.members)
    out = []
    for idx, x_all, y_all in ((val_idx, data.train_x, data.train_y), (test_idx, data.test_x, data.test_y)):
        loss_sum = torch.zeros(network.members, device=x_all.device)
        correct = torch.zeros(network.members, device=x_all.device)
        n = idx.shape[-1]
        for start in range(0, n, chunk):
            part = idx[..., start : start + chunk]
            logits = network(x_all[part])  # [K, c, 10]; shared test inputs broadcast to every member
            y = y_all[part].expand(logits.shape[:2])
            loss_sum += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(1)
            correct += (logits.argmax(-1) == y).sum(1)
        out += [loss_sum / n, correct / n]
    return out


def _record(curve: dict[str, list], iteration: int, metrics: list[torch.Tensor]) -> None:
    values = torch.stack(metrics).tolist()  # the one host sync per evaluation
    curve["iteration"].append(iteration)
    for key, row in zip(CURVE_KEYS[1:], values):
        curve[key].append(row)


def _result(curve: dict[str, list], k: int, final: State, snapshot: State | None) -> TrainResult:
    own = {key: values if key == "iteration" else [v[k] for v in values] for key, values in curve.items()}
    return TrainResult(
        curve=own,
        **early_stop(own),
        final_test_acc=own["test_acc"][-1],
        final_weights=final,
        snapshot=snapshot,
    )
