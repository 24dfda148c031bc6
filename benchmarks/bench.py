"""Training-step benchmark: a plain PyTorch loop, lth_lib's step, K-member ensembles, and
the machine's matmul roofline, all measured in one run on one machine.

    python benchmarks/bench.py                # LeNet and Conv-2, writes benchmarks/results-<machine>.md
    python benchmarks/bench.py --quick        # fewer repeats (a smoke test)
    python benchmarks/bench.py --device cuda --networks lenet300
    python benchmarks/bench.py --networks resnet20 vgg19 --out benchmarks/results-<machine>-section4.md

Rows, per network (LeNet-300-100 on MNIST, Conv-2 on CIFAR-10, batch 60; Section 4's
ResNet-20 and VGG-19 on CIFAR-10 at their batch sizes, 128 and 64, with SGD and
augmentation as the protocol trains them):

* reference: what most reproductions do: a torchvision dataset (`MNIST`, or `ImageFolder` /
  `CIFAR10` for CIFAR-10) with `transforms.ToTensor()`, a `DataLoader(batch_size=60,
  shuffle=True)` (default num_workers=0), a plain `nn.Sequential`, `torch.optim.Adam` with
  its defaults and the paper's learning rate; per step: next batch, `.to(device)`,
  forward, `CrossEntropyLoss`, `zero_grad`, `backward`, `step`. No mask. For Section 4's
  networks: their plain `nn.Module` (`lth_lib.deeper`, torchvision-style), `torch.optim.SGD`
  with the protocol's momentum and weight decay, and `RandomCrop(32, padding=4)` and
  `RandomHorizontalFlip()` in the DataLoader's transform.
* lth_lib K=1, 5, 15 (Section 4's on a CPU: K=1, 2; on a GPU also 35, a whole paper-scale
  level of LeNet): `lth_lib.train.TrainStep`
  -- the object `lth_lib.train.train` calls once per iteration -- on K members with pruned
  masks (one round at the paper's rates: fc 20%, conv 10%, output 10%), fed by `train`'s
  own batch-index iterator, data on the device, under `train`'s deterministic float32
  cuDNN settings. One step trains K networks. On a GPU, "graph" rows replay the step as
  a CUDA graph, as `train` does there (`TrainStep.captured`), and "eager" rows launch its
  kernels one by one; for Conv-2, rows in TF32 and bf16 (`train.kernels`) at K = 1, 7 (one
  trial's level) and 35, as graphs; "streams": one trial's 7 networks as 7 one-network
  graphs replayed at once on separate streams (float32, TF32); "channels_last": the stacks
  of 7 and 35 with their conv weights in channels_last and cuDNN's benchmark on (TF32,
  bf16). A variant that fails on the machine is left out and named on stderr. The
  reference loop runs with PyTorch's defaults (cuDNN may use TF32).
* On a CPU, for Conv-2, speed-ups to try: the reference loop with model and batches
  in channels_last memory format, lth_lib K=1 with oneDNN off (PyTorch's own conv
  kernels), in channels_last, and in bf16. `train` uses none of them unless its row wins.

`--graph-check` trains K = 35 members for 200 steps both ways from the same start and
batches and prints how far apart the parameters end; it exits 1 if they differ by more
than float32 rounding explains (relative difference over 1e-4), so `scripts/device-job`
trains without graphs then.

Columns: ms/step (median over repeats of a block of steps, after warm-up; on a GPU each
block ends with torch.cuda.synchronize), network-steps/s = K / (s/step), speedup =
network-steps/s over the reference's, model GFLOP/step and achieved GFLOP/s, and
roofline fraction.

Roofline. FLOPs of a step are *model FLOPs*: 3 x the forward pass's matmul/conv
multiply-adds x 2 (forward + gradients of inputs and weights), counted from the layer
shapes, times batch 60, times K. Elementwise work (bias, ReLU, softmax, Adam, masks,
pooling) is not counted. The first layer's input gradient is counted although no
implementation needs it (neither autograd nor lth_lib compute it), as the usual 3x rule
does; the `executed` column gives the fraction with that term removed.
The machine's roofline rate is the highest fp32 FLOP/s achieved, in this run, by one
square `torch.mm` among n = 512, 1024, 2048 and the equal-FLOP sizes below (the rate of
one large dense matmul, i.e. what the machine's BLAS reaches on the ideal shape).
Roofline time = step FLOPs / that rate; roofline fraction = roofline time / measured step
time. The "equal-FLOP mm" column is the measured time of one square matmul with the
step's FLOP count (n = (FLOPs/2)^(1/3), shown where n <= 2048) and "fraction of
equal-FLOP mm" is that time over the step's; its rate is at most the roofline rate, so
the roofline fraction (the one in the last line) is the stricter of the two.

The last line printed (and written) is machine-readable, for LeNet-300-100 K=1 vs. the
reference: `speedup_vs_reference=<x> roofline_fraction=<y>`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import lth_lib
from lth_lib.data import batch_indices, data_root, validation_split
from lth_lib.models import glorot_init, layer_multiply_adds, layer_weights, plain_network
from lth_lib.protocol import NETWORKS, CustomNetwork, architecture, paper_experiment

SECTION_4 = [name for name, protocol in NETWORKS.items() if isinstance(protocol.architecture, CustomNetwork)]


def batch_size(name: str) -> int:
    """The batch one step of network `name` takes: the protocol's."""
    return paper_experiment(name).training.batch_size


from lth_lib.pruning import dense_mask, magnitude_prune
from lth_lib.train import Member, TrainStep, kernels

BATCH = 60  # the Section 2-3 networks' batch; Section 4's use their own (`batch_size`)
ENSEMBLES = (1, 5, 15)
DEEP_CPU_ENSEMBLES = (1, 2)  # Section 4's networks on a CPU: a VGG-19 step takes about a second
PAPER_LEVEL = 35  # networks in one paper-scale level: 5 tickets, 15 reinitialised, 15 randomly pruned
TRIAL_LEVEL = 7  # one trial's networks at a paper-scale level: its ticket and 6 controls
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- FLOPs
def forward_flops(name: str) -> tuple[int, int]:
    """(forward multiply-add FLOPs of one example, those of the first layer) for network
    `name`, counted on the network (`lth_lib.models.multiply_adds`): conv 2*Cin*k*k*Cout*H*W
    ('same' padding), fc 2*in*out."""
    per_layer = layer_multiply_adds(name)
    return 2 * sum(per_layer.values()), 2 * next(iter(per_layer.values()))


# --------------------------------------------------------------------------- timing
@dataclass
class Case:
    label: str
    run: Callable[[int], None]  # run n steps
    per_call: int  # network-steps per call (K), or 0 for a matmul
    flops: float  # model FLOPs of one call
    steps: int = 1  # calls per timed block, set by calibration
    times: list[float] = field(default_factory=list)  # seconds per call, one per block

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def calibrate(case: Case, sync: Callable[[], None], warmup: int, target_s: float) -> None:
    case.run(warmup)
    sync()
    t = time.perf_counter()
    case.run(1)
    sync()
    one = time.perf_counter() - t
    case.steps = max(1, int(target_s / max(one, 1e-6)))


def measure(cases: list[Case], sync: Callable[[], None], repeats: int) -> None:
    """Round-robin over cases so that load from elsewhere falls on all of them alike."""
    for _ in range(repeats):
        for case in cases:
            sync()
            t = time.perf_counter()
            case.run(case.steps)
            sync()
            case.times.append((time.perf_counter() - t) / case.steps)


# --------------------------------------------------------------------------- reference loop
def reference_case(name: str, device: torch.device, channels_last: bool = False) -> Case:
    """The reference loop; `channels_last`: model and batches in that memory format (a CPU
    speed-up to try for convolutions)."""
    import torchvision
    from torchvision import transforms

    root, download = data_root()
    batch, hparams = batch_size(name), paper_experiment(name).training
    transform = transforms.ToTensor()
    if hparams.augment:
        transform = transforms.Compose(
            [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        )
    if name == "lenet300":
        dataset = torchvision.datasets.MNIST(
            str(root), train=True, download=download, transform=transforms.ToTensor()
        )
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    else:
        if (root / "cifar-10-batches-py").is_dir() or download:
            dataset = torchvision.datasets.CIFAR10(
                str(root), train=True, download=download, transform=transform
            )
        else:
            dataset = torchvision.datasets.ImageFolder(
                str(root / "CIFAR-10-images" / "train"), transform=transform
            )
    if name in SECTION_4:
        model = plain_network(name)
    elif name != "lenet300":
        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
        )  # fmt: skip
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    if hparams.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=hparams.lr)
    criterion = nn.CrossEntropyLoss()
    batches = iter(loader)

    def run(n: int) -> None:
        nonlocal batches
        for _ in range(n):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            x, y = x.to(device), y.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    label = f"reference (DataLoader + nn.Module + {hparams.optimizer.upper() if hparams.optimizer == 'sgd' else 'Adam'})"
    label += " channels_last" if channels_last else ""
    return Case(label, run, 1, 3 * forward_flops(name)[0] * batch)


# --------------------------------------------------------------------------- lth_lib's step
def pruned_members(name: str, k: int) -> list[Member]:
    """K members, each with its own init and a one-round magnitude-pruned mask (the paper's rates)."""
    rates = paper_experiment(name).rates
    members = []
    for seed in range(k):
        w = glorot_init(name, seed)
        mask = magnitude_prune(layer_weights(name, w), dense_mask(name), rates)
        members.append(Member(w, mask, seed))
    return members


def lth_case(name: str, k: int, data: lth_lib.Dataset, device: torch.device, variant: str = "",
             precision: str = "float32") -> Case:  # fmt: skip
    """lth_lib's step on K members in `precision` (`train.kernels`); variant "graph" (a CUDA
    graph, as `train` runs it on a GPU), "eager", "" (the device's default: CPU), "oneDNN
    off" (a CPU's convolutions without oneDNN, PyTorch's own kernels), or "channels_last"
    (the stack's conv weights and their Adam moments in channels_last, so its convolutions
    run NHWC, with cuDNN's benchmark choosing among its deterministic algorithms; a graph on
    a GPU)."""
    members, batch = pruned_members(name, k), batch_size(name)
    x_all, y_all = data.train_x, data.train_y
    nhwc = variant == "channels_last"
    graph = variant == "graph" or (nhwc and device.type == "cuda")
    with kernels(precision, device), _cudnn_benchmark(nhwc):
        step = TrainStep.build(name, members, paper_experiment(name).training, device, precision=precision)
        if nhwc:
            _channels_last(step)
        take = step.feeder(x_all, y_all, batch, graph=graph)
    train_idx = torch.stack([validation_split(len(data.train_x), m.data_seed)[0] for m in members])
    batches = batch_indices(train_idx, [m.data_seed for m in members], batch, 0, device)

    def run(n: int) -> None:
        with (
            kernels(precision, device),
            _cudnn_benchmark(nhwc),
            torch.backends.mkldnn.flags(enabled=variant != "oneDNN off"),
        ):
            for _ in range(n):
                take(next(batches))

    label = (
        f"lth_lib K={k}"
        + (f" {variant}" if variant else "")
        + (f" {precision}" if precision != "float32" else "")
    )
    return Case(label, run, k, 3 * forward_flops(name)[0] * batch * k)


@contextlib.contextmanager
def _cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's benchmark mode while `on` (`kernels` keeps it deterministic)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on or before
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _channels_last(step: TrainStep) -> None:
    """Lay the stack's conv weights ([K, out, in, kh, kw]) and their Adam moments out in
    memory as [K, out, kh, kw, in], in place: the grouped convolution's weight view is then
    channels_last, and a convolution runs in its weight's memory format."""
    with torch.no_grad():
        for tensors in (step.params, step.exp_avgs, step.exp_avg_sqs):
            for t in tensors:
                if t.dim() == 5:
                    t.data = t.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def streams_case(name: str, k: int, data: lth_lib.Dataset, device: torch.device,
                 precision: str = "float32") -> Case:  # fmt: skip
    """K networks, each its own one-network step captured as a CUDA graph, the K graphs
    replayed at once on K side streams: separate graphs side by side against one grouped
    stack (CUDA only)."""
    batch, main = batch_size(name), torch.cuda.current_stream(device)
    streams = [torch.cuda.Stream(device) for _ in range(k)]
    takes, feeds = [], []
    with kernels(precision, device):
        for member in pruned_members(name, k):
            step = TrainStep.build(
                name, [member], paper_experiment(name).training, device, precision=precision
            )
            takes.append(step.feeder(data.train_x, data.train_y, batch, graph=True))
            train_idx = validation_split(len(data.train_x), member.data_seed)[0][None]
            feeds.append(batch_indices(train_idx, [member.data_seed], batch, 0, device))

    def run(n: int) -> None:
        with kernels(precision, device):
            for _ in range(n):
                for take, feed, stream in zip(takes, feeds, streams):
                    idx = next(feed)  # made on the main stream
                    stream.wait_stream(main)
                    with torch.cuda.stream(stream):
                        idx.record_stream(stream)
                        take(idx)
                for stream in streams:
                    main.wait_stream(stream)

    label = f"lth_lib K={k} streams" + (f" {precision}" if precision != "float32" else "")
    return Case(label, run, k, 3 * forward_flops(name)[0] * batch * k)


def lth_cases(name: str, data: lth_lib.Dataset, device: torch.device) -> list[Case]:
    """lth_lib's rows: on a CPU K = 1, 5, 15, and for Conv-2 K=1 without oneDNN, in
    channels_last and in bf16; on a GPU also 35, each as a graph and eager, and for Conv-2
    K = 1, one trial's level (7) and 35 as graphs in TF32 and bf16 (`protocol.PRECISIONS`),
    one trial's level as 7 graphs on separate streams (float32 and TF32), and the stacks of
    7 and 35 in channels_last with cuDNN's benchmark (TF32 and bf16)."""
    if device.type != "cuda":
        conv = architecture(name).convolutional and name not in SECTION_4
        tries = (
            [(1, "oneDNN off", "float32"), (1, "channels_last", "float32"), (1, "", "bf16")] if conv else []
        )
        ensembles = DEEP_CPU_ENSEMBLES if name in SECTION_4 else ENSEMBLES
        return [
            lth_case(name, k, data, device, variant, precision)
            for k, variant, precision in [(k, "", "float32") for k in ensembles] + tries
        ]
    variants = [(k, v, "float32") for k in (*ENSEMBLES, PAPER_LEVEL) for v in ("graph", "eager")]
    if architecture(name).convolutional and name not in SECTION_4:
        variants += [(k, "graph", p) for k in (1, TRIAL_LEVEL, PAPER_LEVEL) for p in ("tf32", "bf16")]
        variants += [(TRIAL_LEVEL, "streams", p) for p in ("float32", "tf32")]
        variants += [(k, "channels_last", p) for k in (TRIAL_LEVEL, PAPER_LEVEL) for p in ("tf32", "bf16")]
    cases = []
    for k, variant, precision in variants:
        try:
            build = streams_case if variant == "streams" else functools.partial(lth_case, variant=variant)
            case = build(name, k, data, device, precision=precision)
            case.run(1)  # a variant that fails, fails here
            cases.append(case)
        except Exception as error:  # noqa: BLE001 -- a failed capture or variant costs its row, not the table
            print(f"[{name} K={k} {variant} {precision}: {type(error).__name__}: {error}]", file=sys.stderr)
    return cases


def graph_check(name: str, device: torch.device, k: int = PAPER_LEVEL, steps: int = 200) -> bool:
    """Train K members `steps` steps eagerly and as a replayed CUDA graph from the same start
    on the same batches; print the largest difference; whether it is within rounding."""
    data = lth_lib.load_dataset(architecture(name).dataset, device=device)
    members = pruned_members(name, k)
    train_idx = torch.stack([validation_split(len(data.train_x), m.data_seed)[0] for m in members])
    ends = []
    with kernels("float32", device):
        for graphed in (False, True):
            step = TrainStep.build(name, members, NETWORKS[name].lr, device)
            take = step.feeder(data.train_x, data.train_y, BATCH, graph=graphed)
            batches = batch_indices(train_idx, [m.data_seed for m in members], BATCH, 0, device)
            for _ in range(steps):
                take(next(batches))
            ends.append(torch.cat([p.detach().flatten() for p in step.params]))
    eager, graph = ends
    relative = ((eager - graph).norm() / eager.norm()).item()
    moved = ((eager != graph).float().mean()).item()
    ok = relative <= 1e-4 and bool(torch.isfinite(graph).all())
    print(f"graph check {name} K={k}, {steps} steps: {'bit-identical' if moved == 0 else f'{moved:.2%} of parameters differ'}, "
          f"relative difference {relative:.2e}: {'OK' if ok else 'FAILED'}")  # fmt: skip
    return ok


def matmul_case(n: int, device: torch.device) -> Case:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)

    def run(m: int) -> None:
        for _ in range(m):
            torch.mm(a, b, out=c)

    return Case(f"mm {n}", run, 0, 2.0 * n**3)


# --------------------------------------------------------------------------- main
def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        model = torch.cuda.get_device_name(device)
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1]
                    break
        except OSError:
            pass
        model = f"{model}-{torch.get_num_threads()}threads"
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--networks", nargs="+", default=["lenet300", "conv2"], choices=["lenet300", "conv2", *SECTION_4]
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default benchmarks/results-<machine>.md)"
    )
    parser.add_argument("--graph-check", action="store_true",
                        help="only check that CUDA-graph steps train as eager ones do (exit 1 if not)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.graph_check:
        return 0 if all(graph_check(name, device) for name in args.networks) else 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    repeats, target = (3, 0.1) if args.quick else (7, 0.3)
    started = time.perf_counter()
    load_before = os.getloadavg()

    peak_cases = [matmul_case(n, device) for n in (512, 1024, 2048)]
    sections = []  # (name, [rows]), rows: (case, eq_mm case or None)
    for name in args.networks:
        data = lth_lib.load_dataset(architecture(name).dataset, device=device)
        ref = reference_case(name, device)
        tries = (
            [reference_case(name, device, channels_last=True)]
            if device.type == "cpu" and "conv" in name
            else []
        )
        ours = lth_cases(name, data, device)
        rows = []
        for case in [ref, *tries, *ours]:
            n = round((case.flops / 2) ** (1 / 3))
            rows.append((case, matmul_case(n, device) if n <= 2048 else None))
        cases = [c for row in rows for c in row if c is not None]
        for case in cases + (peak_cases if not sections else []):
            calibrate(case, sync, warmup=1 if "conv" in name else 20, target_s=target)
        reps = min(repeats, 3) if "conv" in name else repeats
        measure(cases + peak_cases, sync, reps)
        sections.append((name, rows))
        print(f"[{name} measured, {time.perf_counter() - started:.0f} s]", file=sys.stderr)
        del data

    all_mm = peak_cases + [eq for _, rows in sections for _, eq in rows if eq is not None]
    peak = max(c.flops / c.seconds for c in all_mm)
    lines = [
        f"# Training-step benchmark on {machine_name(device)}",
        "",
        (
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}; "
            f"device {device}; threads {torch.get_num_threads()}; cores {os.cpu_count()}; batch "
            + ", ".join(f"{name} {batch_size(name)}" for name in args.networks)
        ),
        (
            f"- 1-minute load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
            f"(the run itself adds up to {torch.get_num_threads()}; before > 0 means other work had just run)"
        ),
        f"- matmul roofline rate (best square fp32 mm in this run): {peak / 1e9:,.1f} GFLOP/s; "
        + ", ".join(f"mm {c.label.split()[1]}: {c.flops / c.seconds / 1e9:,.1f}" for c in peak_cases),
        (
            f"- repeats: {repeats} (conv: {min(repeats, 3)}), median; `python benchmarks/bench.py"
            f"{' --quick' if args.quick else ''}` took {{elapsed}} s"
        ),
        "",
        (
            "| network | variant | K | ms/step | network-steps/s | speedup vs reference | model GFLOP/step "
            "| achieved GFLOP/s | equal-FLOP mm ms | fraction of equal-FLOP mm | roofline ms | roofline fraction "
            "| executed-FLOP fraction |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    headline = None
    for name, rows in sections:
        ref_rate = rows[0][0].per_call / rows[0][0].seconds
        fwd, first = forward_flops(name)
        executed = (3 * fwd - first) / (3 * fwd)  # the first layer's input gradient is never computed
        for case, eq in rows:
            rate = case.per_call / case.seconds
            roof = case.flops / peak
            frac = roof / case.seconds
            lines.append(
                f"| {name} | {case.label} | {case.per_call} | {fmt(case.seconds * 1e3, 3)} | {fmt(rate, 1)} "
                f"| {fmt(rate / ref_rate)}x | {fmt(case.flops / 1e9, 4)} | {fmt(case.flops / case.seconds / 1e9, 1)} "
                f"| {fmt(eq.seconds * 1e3 if eq else None, 3)} | {fmt(eq.seconds / case.seconds if eq else None, 3)} "
                f"| {fmt(roof * 1e3, 3)} | {fmt(frac, 3)} "
                f"| {fmt(frac * executed, 3)} |"
            )
            if name == "lenet300" and case.label in ("lth_lib K=1", "lth_lib K=1 graph"):
                headline = (rate / ref_rate, frac)
    elapsed = time.perf_counter() - started
    lines[5] = lines[5].replace("{elapsed}", f"{elapsed:.0f}")
    lines.append("")
    if headline is not None:
        lines.append(f"speedup_vs_reference={headline[0]:.2f} roofline_fraction={headline[1]:.3f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = args.out or HERE / f"results-{machine_name(device)}.md"
    out.write_text(text)
    print(f"[written to {out}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
