"""Training K masked networks at once, with the paper's early-stopping bookkeeping.

The data set lives as tensors on the device and batches are drawn by index, so a step
is a gather, one forward/backward through the stacked members, a fused Adam step and a
foreach multiply that keeps pruned weights exactly zero. Metrics are read back to the
host only at evaluation points. On a GPU the step is captured once as a CUDA graph and
replayed (`TrainStep.captured`; LTH_CUDA_GRAPHS=0 turns that off), in the precision
`protocol.training_precision` gives (`kernels`: float32 unless a network's protocol says
otherwise on a GPU), with cuDNN held to deterministic kernels. The loss is the sum over members of each member's mean
cross-entropy, and Adam is elementwise, so every member trains exactly as it would
alone (tests/test_train.py checks this against one-by-one training).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lth_lib.data import Augment, Dataset, batch_indices, test_subset, validation_split
from lth_lib.models import Dropout, ModuleStack, Network, State, stacked
from lth_lib.protocol import ADAM_BETAS, ADAM_EPS, LR_DROP, PRECISIONS, TrainingHparams
from lth_lib.pruning import Mask
from lth_lib.results import METRICS

CURVE_KEYS = ("iteration", *METRICS)
# On a GPU, replay each step as a CUDA graph (LTH_CUDA_GRAPHS=0: launch its kernels one by one).
CUDA_GRAPHS = os.environ.get("LTH_CUDA_GRAPHS", "1") != "0"
# Examples evaluated at once, over all members: on a CPU 4,096; on a GPU more, within memory.
EVAL_EXAMPLES = {"cpu": 4096, "cuda_fc": 1 << 16, "cuda_conv": 1 << 13}


@dataclass
class Member:
    """One network to train: its initial parameters, its mask and its seeds."""

    weights: State  # initial parameters of one member, named as `Network.named_parameters()` names them
    mask: Mask
    data_seed: int  # determines the validation split, and the data order unless order_seed is set
    order_seed: int | None = None  # data order and dropout (None: data_seed); copies that differ here
    # see the same data in another order (`lth_lib.stability`)

    @property
    def noise_seed(self) -> int:
        """The seed of this member's data order and dropout masks."""
        return self.data_seed if self.order_seed is None else self.order_seed


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
    snapshots: dict[int, State] = field(
        default_factory=dict, repr=False
    )  # weights at each `snapshot_iterations`


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
    snapshot_iterations: tuple[int, ...] = (),
    progress: Callable[[int, dict[str, list[float]]], None] | None = None,
    precision: str = "float32",
    test_every: int | None = None,
) -> list[TrainResult]:
    """Train `members` together on `data` (on data's device) from `start_iteration`, in
    `precision` (`kernels`; steps and evaluation alike).

    Training runs to `hparams.iterations` (a rewound ticket resumes at its rewind
    iteration). `snapshot_iterations` keeps each member's weights at those iterations.
    `progress(iteration, metrics)` is called at each evaluation point.

    Validation metrics are computed at every evaluation point; test metrics too, unless
    `test_every` is given: then only every `test_every` iterations, at the end, and where
    some member's validation loss is below every earlier one (NaN elsewhere). The
    early-stop point, the first minimum of validation loss, is always such a point, so the
    early-stop and final numbers are those of evaluating everything.
    """
    if not 0 <= start_iteration < hparams.iterations:
        raise ValueError(f"start_iteration must be in [0, {hparams.iterations}), got {start_iteration}")
    device, batch = data.train_x.device, hparams.batch_size
    splits = [validation_split(len(data.train_x), m.data_seed) for m in members]
    train_idx = torch.stack([s[0] for s in splits])
    val_idx = torch.stack([s[1] for s in splits])[:, : hparams.eval_examples].to(device)
    test_idx = test_subset(len(data.test_x), hparams.eval_examples).to(device)
    batches = batch_indices(train_idx, [m.noise_seed for m in members], batch, start_iteration, device)
    curve: dict[str, list[list[float]]] = {key: [] for key in CURVE_KEYS}
    best = torch.full((len(members),), float("inf"), device=device)  # each member's lowest validation loss
    snapshots: dict[int, list[State]] = {}
    with kernels(precision, device):
        step = TrainStep.build(network_name, members, hparams, device, hparams.dropout, precision)
        take_step = step.feeder(data.train_x, data.train_y, batch)
        for iteration in range(start_iteration, hparams.iterations + 1):
            if iteration in snapshot_iterations:
                snapshots[iteration] = step.network.member_states()
            if iteration % hparams.eval_every == 0 or iteration == hparams.iterations:
                val = _split_metrics(step.network, data.train_x, data.train_y, val_idx)
                new_best = bool((val[0] < best).any())  # a host sync, as `_record`'s
                best = torch.minimum(best, val[0])
                if (
                    test_every is None
                    or new_best
                    or iteration % test_every == 0
                    or iteration == hparams.iterations
                ):
                    test = _split_metrics(step.network, data.test_x, data.test_y, test_idx)
                else:
                    test = [torch.full_like(val[0], float("nan"))] * 2
                _record(curve, iteration, val + test)
                if progress is not None:
                    progress(iteration, {key: values[-1] for key, values in curve.items()})
            if iteration == hparams.iterations:
                break
            take_step(next(batches))
    final = step.network.member_states()
    return [
        _result(curve, i, final[i], {k: states[i] for k, states in snapshots.items()})
        for i in range(len(members))
    ]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else where training runs unless told: the GPU if there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's core count: where a level was trained."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


@contextlib.contextmanager
def kernels(precision: str = "float32", device: str | torch.device = "cpu") -> Iterator[None]:
    """Run in `precision` (`protocol.PRECISIONS`) on `device`, with cuDNN held to
    deterministic kernels (its default picks algorithms that vary between runs): float32
    (cuDNN's default lets convolutions use TF32; here they do not, nor matmuls), tf32
    (convolutions and matmuls in CUDA's TensorFloat-32; a CPU has none, so there it is
    float32), or bf16 (autocast on `device`'s type: convolutions and matmuls in bfloat16,
    weights, optimiser and loss in float32). The settings are restored afterwards."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    tf32, matmul = precision == "tf32", torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with (
            torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=tf32),
            torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16", cache_enabled=False),
        ):  # fmt: skip
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


class TrainStep:
    """One optimiser step of K stacked members; `train` calls it once per iteration.

    `step(x_all, y_all, idx)` gathers the batch `x_all[idx]` ([K, B] indices; the data stay
    on the device), computes the gradient of the sum over members of each member's mean
    cross-entropy, takes one fused Adam step and multiplies the masks into the prunable
    weights in place (one foreach kernel), so pruned weights stay exactly zero. Nothing
    is read back to the host, so on a GPU steps queue without syncs.

    Fully connected networks (LeNet) skip autograd: the forward pass keeps its
    activations and the backward pass is batched matmuls into preallocated gradient
    buffers, with no gradient for the input. Networks with conv layers use autograd.
    `manual=False` forces autograd (tests check that the two agree). With dropout every
    network uses autograd, and so does a `ModuleStack` (any module; batch normalisation in
    training mode while it steps).

    `lr` is Adam's constant learning rate, or a TrainingHparams whose optimizer and
    learning-rate schedule to follow. Adam is torch.optim.Adam's own fused kernel
    (`torch._fused_adam_`, what `Adam(fused=True).step()` calls), invoked directly with the
    state lists built once: same arithmetic, without the per-step Python bookkeeping of
    `Optimizer.step`; its hyperparameters are the protocol's (`ADAM_BETAS`, `ADAM_EPS`, no
    weight decay). SGD is torch.optim.SGD's arithmetic (weight decay added to the gradient,
    heavy-ball momentum, no dampening) in foreach kernels. A warm-up or drops make the
    learning rate a device tensor computed from the step counter, so a CUDA graph replays
    the schedule too.
    """

    @classmethod
    def build(cls, network_name: str, members: list[Member], lr: float | TrainingHparams,
              device: str | torch.device = "cpu", dropout: float = 0.0, precision: str = "float32") -> TrainStep:  # fmt: skip
        """The step `train` uses: a K-member network from `members`' weights and masks,
        with `dropout` masks (and augmentation, if `lr` asks for it) drawn from each
        member's `noise_seed`. In bf16 it uses autograd (autocast chooses each product's
        precision there; the manual pass is float32's)."""
        network = stacked(network_name, members=len(members)).to(device)
        network.load_members([m.weights for m in members])
        masks = [
            torch.stack([m.mask[layer] for m in members]).to(device, torch.float32)
            for layer in network.prunable()
        ]
        seeds = [m.noise_seed for m in members]
        augment = isinstance(lr, TrainingHparams) and lr.augment
        return cls(
            network,
            masks,
            lr,
            manual=False if precision == "bf16" else None,
            dropout=(dropout, seeds) if dropout else None,
            augment=seeds if augment else None,
        )

    def __init__(self, network: Network | ModuleStack, masks: list[torch.Tensor], lr: float | TrainingHparams,
                 manual: bool | None = None, dropout: tuple[float, list[int]] | None = None,
                 augment: list[int] | None = None):  # fmt: skip
        self.network = network.train()
        self.weights = list(network.prunable().values())
        self.masks = masks
        with torch.no_grad():
            torch._foreach_mul_(self.weights, self.masks)
        plain = isinstance(network, Network) and not network.arch.convolutional and dropout is None
        self.manual = plain if manual is None else manual
        if self.manual and not plain:
            raise ValueError("the manual backward pass covers fully connected networks without dropout only")
        hparams = lr if isinstance(lr, TrainingHparams) else None
        self.optimizer = hparams.optimizer if hparams else "adam"
        self.momentum, self.weight_decay = (hparams.momentum, hparams.weight_decay) if hparams else (0.0, 0.0)
        self.params = list(network.parameters())
        for p in self.params:  # gradients live in fixed buffers that each backward pass overwrites
            p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in self.params]
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]  # SGD: the momentum buffers
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params] if self.optimizer == "adam" else []
        self.step_count = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        self.steps = [self.step_count] * len(self.params)  # one shared counter
        self.schedule = hparams if hparams and (hparams.warmup or hparams.lr_drops) else None
        self.lr = hparams.lr if hparams else lr
        if self.schedule is not None or self.optimizer == "sgd":
            self.lr = torch.full((), self.lr, device=self.step_count.device)
            self.base_lr = self.lr.clone()
        self.drops = torch.tensor(hparams.lr_drops if hparams else (), device=self.step_count.device)
        self.dropout = None if dropout is None else Dropout(*dropout, step=self.step_count)
        self.augment = None if augment is None else Augment(augment, step=self.step_count)
        if self.manual:  # views for the manual pass, made once rather than every step
            self.layers = list(network.layers.values())
            self.weights_t = [layer.weight.detach().mT for layer in self.layers]
            self.biases = [layer.bias.detach().unsqueeze(1) for layer in self.layers]

    def __call__(self, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor) -> None:
        flat = idx.reshape(-1)
        x = x_all.index_select(0, flat).view(*idx.shape, *x_all.shape[1:])
        y = y_all.index_select(0, flat).view(idx.shape)
        if self.augment is not None:
            x = self.augment(x)
        if self.manual:
            with torch.no_grad():
                self._fc_backward(x, y)
        else:
            logits = self.network(x, self.dropout)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / idx.shape[-1]
            for p in self.params:
                p.grad = None
            loss.backward()
            self.grads = [p.grad for p in self.params]
        with torch.no_grad():
            self.step_count.add_(1)
            if self.schedule is not None:
                self._schedule()
            if self.optimizer == "adam":
                torch._fused_adam_(
                    self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [], self.steps,
                    lr=self.lr, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=0.0, eps=ADAM_EPS,
                    amsgrad=False, maximize=False,
                )  # fmt: skip
            else:
                self._sgd()
            torch._foreach_mul_(self.weights, self.masks)

    def _schedule(self) -> None:
        """The learning rate of step t = step_count - 1: lr * min(1, (t + 1) / warmup) *
        LR_DROP ** (drops at or before t), computed on the device."""
        lr = self.base_lr * LR_DROP ** (self.drops < self.step_count).sum()
        if self.schedule.warmup:
            lr = lr * torch.clamp(self.step_count / self.schedule.warmup, max=1.0)
        self.lr.copy_(lr)

    def _sgd(self) -> None:
        """torch.optim.SGD's step: g += weight_decay * p; buf = momentum * buf + g (buf starts
        at 0, so the first step's buf is g, as torch.optim.SGD's); p -= lr * buf."""
        grads = self.grads
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if self.momentum:
            torch._foreach_mul_(self.exp_avgs, self.momentum)
            torch._foreach_add_(self.exp_avgs, grads)
            grads = self.exp_avgs
        torch._foreach_add_(self.params, torch._foreach_mul(grads, -self.lr))

    def feeder(self, x_all: torch.Tensor, y_all: torch.Tensor, batch: int, graph: bool | None = None
               ) -> Callable[[torch.Tensor], None]:  # fmt: skip
        """`take(idx)`: one step on the batch `x_all[idx]`, as a replayed CUDA graph
        (`captured`) if `graph`, else with its kernels launched one by one. None: as `train`
        steps, a graph on a GPU unless LTH_CUDA_GRAPHS=0."""
        if graph is None:
            graph = x_all.device.type == "cuda" and CUDA_GRAPHS
        if graph:
            return self.captured(x_all, y_all, batch)
        return lambda idx: self(x_all, y_all, idx)

    def captured(
        self, x_all: torch.Tensor, y_all: torch.Tensor, batch: int
    ) -> Callable[[torch.Tensor], None]:
        """This step recorded once as a CUDA graph: `replay(idx)` copies the [K, batch]
        indices into the graph's input and replays it, two launches instead of a step's
        dozens (LeNet's step is launch-bound). The warm-up steps that capture needs change
        the parameters and Adam's state; both are put back afterwards, so training is
        unchanged. Replays read `x_all`/`y_all` as they were captured."""
        idx = torch.zeros(self.network.members, batch, dtype=torch.long, device=x_all.device)
        state = (
            self.params + self.exp_avgs + self.exp_avg_sqs + [self.step_count] + list(self.network.buffers())
        )
        saved = [t.detach().clone() for t in state]
        side = torch.cuda.Stream(x_all.device)
        side.wait_stream(torch.cuda.current_stream(x_all.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self(x_all, y_all, idx)
        torch.cuda.current_stream(x_all.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self(x_all, y_all, idx)
        with torch.no_grad():
            for t, value in zip(state, saved):
                t.copy_(value)

        def replay(batch_idx: torch.Tensor) -> None:
            idx.copy_(batch_idx)
            graph.replay()

        # the graph reads and writes this step's tensors by address: keep them alive with it
        replay.graph, replay.step = graph, self
        return replay

    def _fc_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Gradients of sum_k mean-cross-entropy_k for a fully connected stack, written
        into each parameter's `.grad` buffer. x: [K, B, in]; y: [K, B]."""
        inputs = [x]
        for weight_t, bias in zip(self.weights_t[:-1], self.biases[:-1]):
            inputs.append(torch.baddbmm(bias, inputs[-1], weight_t).relu_())
        logits = torch.baddbmm(self.biases[-1], inputs[-1], self.weights_t[-1])
        g = torch.softmax(logits, -1)  # d loss / d logits = (softmax - onehot) / B
        g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(g[..., :1], -1.0)).mul_(1.0 / x.shape[1])
        for i in range(len(inputs) - 1, -1, -1):
            layer, a = self.layers[i], inputs[i]
            torch.bmm(g.mT, a, out=layer.weight.grad)
            torch.sum(g, 1, out=layer.bias.grad)
            if i > 0:  # ReLU's backward, as autograd does it (zero where the output is 0)
                g = torch.ops.aten.threshold_backward(torch.bmm(g, layer.weight), a, 0.0)


@torch.no_grad()
def evaluate(network: Network | ModuleStack, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Each member's summed cross-entropy and number of correct answers ([K] tensors on the
    device) over the examples `idx` of (x_all, y_all): [K, n] indices, one row per member,
    or [n] shared by all. Examples go through in chunks that fit the device's memory, in
    evaluation mode (batch normalisation's running statistics); the mode is restored."""
    training = network.training
    network.eval()
    try:
        return _evaluate(network, x_all, y_all, idx)
    finally:
        network.train(training)


def _evaluate(network: Network | ModuleStack, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    on_gpu = x_all.device.type == "cuda"
    budget = EVAL_EXAMPLES[f"cuda_{'conv' if network.arch.convolutional else 'fc'}" if on_gpu else "cpu"]
    chunk = max(1, budget // network.members)
    loss_sum = torch.zeros(network.members, device=x_all.device)
    correct = torch.zeros(network.members, device=x_all.device)
    for start in range(0, idx.shape[-1], chunk):
        part = idx[..., start : start + chunk]
        logits = network(x_all[part])  # [K, c, 10]; shared inputs broadcast to every member
        y = y_all[part].expand(logits.shape[:2])
        loss_sum += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").sum(1)
        correct += (logits.argmax(-1) == y).sum(1)
    return loss_sum, correct


def _split_metrics(
    network: Network | ModuleStack, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor
) -> list[torch.Tensor]:
    """Per-member [mean loss, accuracy] over the examples `idx` of (x_all, y_all), as two
    [K] tensors (on the device)."""
    loss_sum, correct = evaluate(network, x_all, y_all, idx)
    return [loss_sum / idx.shape[-1], correct / idx.shape[-1]]


def _record(curve: dict[str, list], iteration: int, metrics: list[torch.Tensor]) -> None:
    values = torch.stack(metrics).tolist()  # the one host sync per evaluation
    curve["iteration"].append(iteration)
    for key, row in zip(METRICS, values):
        curve[key].append(row)


def _result(curve: dict[str, list], member: int, final: State, snapshots: dict[int, State]) -> TrainResult:
    own = {
        key: values if key == "iteration" else [v[member] for v in values] for key, values in curve.items()
    }
    return TrainResult(
        curve=own,
        **early_stop(own),
        final_test_acc=own["test_acc"][-1],
        final_weights=final,
        snapshots=snapshots,
    )
