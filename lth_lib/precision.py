"""The precision side by side: a stored float32 level 0 against the same networks trained
in a faster precision, before a GPU slot trains anything in it.

    python -m lth_lib.precision --network conv2 --precision tf32 --out OUT/precision-conv2.md

Trains the dense level 0 of the paper-scale experiment whose level 0 the portable store
holds (Conv-2: 5 trials, 20,000 iterations, evaluated as the protocol evaluates) in
`--precision`, from the same seeds (test metrics where the queue computes them:
`protocol.evaluation_grid`; the early-stop numbers do not depend on it), and writes a
table beside the stored float32 numbers:
per trial the early-stop iteration and the test accuracy there, then their means and
min-max ranges. The two agree when each precision's mean of both lies within the other's
min-max range over the trials; the command exits 0 if they agree, 3 if not (so
`scripts/device-job` then trains in float32: `protocol.NetworkProtocol.gpu_precision`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lth_lib.data import Dataset, load_dataset
from lth_lib.models import initial_state
from lth_lib.portable import portable_store, read_level, stored_folders
from lth_lib.protocol import PRECISIONS, Experiment, architecture, evaluation_grid
from lth_lib.pruning import dense_mask
from lth_lib.results import Record
from lth_lib.train import Member, default_device, device_name, train

MEASURES = ("early_stop_iteration", "early_stop_test_acc")


def agree(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> bool:
    """Whether each side's mean of every measure (`MEASURES`, per trial) lies within the
    other side's min-max range over the trials."""
    for measure in MEASURES:
        for a, b in ((ours[measure], theirs[measure]), (theirs[measure], ours[measure])):
            if not min(b) <= sum(a) / len(a) <= max(b):
                return False
    return True


def stored_dense(
    network: str, store: Path, copy: str, experiments: list[Experiment] | None = None
) -> tuple[Experiment, list[Record]]:
    """The experiment of `experiments` (default: the paper-scale ones a slot trains,
    `advance.queue`) on `network` whose level 0 `store` holds for data copy `copy`, and
    that level's records (one per trial)."""
    if experiments is None:
        from lth_lib.advance import queue

        experiments = queue("paper")
    for exp in experiments:
        folder = stored_folders(exp, store).get(copy) if exp.network == network else None
        level = read_level(folder, 0) if folder is not None else None
        if level is not None:
            return exp, level.records
    raise LookupError(f"{store} holds no level 0 of {network} on {copy}: nothing to compare with")


def side_by_side(network: str, precision: str, data: Dataset, store: Path,
                 experiments: list[Experiment] | None = None) -> tuple[str, bool]:  # fmt: skip
    """Train the stored level 0 of `network` (`stored_dense`) again in `precision` on
    `data` (on its device); the table (markdown) and whether the two agree (`agree`)."""
    exp, stored = stored_dense(network, store, data.copy, experiments)
    members = [Member(initial_state(network, seed), dense_mask(network), seed) for seed in exp.seeds]
    started = time.monotonic()
    test_every = evaluation_grid(network, data.train_x.device.type)  # as the queue will train
    trained = train(network, members, data, exp.training, precision=precision, test_every=test_every)
    seconds = time.monotonic() - started
    ours = {m: [getattr(r, m) for r in trained] for m in MEASURES}
    theirs = {m: [getattr(r, m) for r in sorted(stored, key=lambda r: r.trial)] for m in MEASURES}
    verdict = agree(ours, theirs)
    how = (
        f"{exp.trials} trials, {exp.training.iterations:,} iterations, evaluated every {exp.training.eval_every}; "
        f"{precision} trained on {device_name(data.train_x.device)} in {seconds:.0f} s ({len(members)} at once). "
        "Written by `python -m lth_lib.precision`."
    )
    header = f"| trial | early stop, float32 | early stop, {precision} | test acc. there, float32 | test acc. there, {precision} |"
    lines = [
        f"# {network}'s dense level: {precision} beside the stored float32",
        "",
        how,
        "",
        header,
        "|---|---|---|---|---|",
    ]
    for t in range(exp.trials):
        lines.append(
            f"| {t} | {theirs[MEASURES[0]][t]:,} | {ours[MEASURES[0]][t]:,} | {100 * theirs[MEASURES[1]][t]:.2f}% | "
            f"{100 * ours[MEASURES[1]][t]:.2f}% |"
        )
    for name, pick in (("mean", lambda v: sum(v) / len(v)), ("min", min), ("max", max)):
        its = [pick(theirs[MEASURES[0]]), pick(ours[MEASURES[0]])]
        accs = [100 * pick(theirs[MEASURES[1]]), 100 * pick(ours[MEASURES[1]])]
        lines.append(f"| {name} | {its[0]:,.0f} | {its[1]:,.0f} | {accs[0]:.2f}% | {accs[1]:.2f}% |")
    word = "agree" if verdict else "disagree"
    lines += [
        "",
        f"Verdict: they {word} (each mean within the other's min-max range: {'yes' if verdict else 'no'}).",
    ]
    return "\n".join(lines) + "\n", verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lth_lib.precision", description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="conv2")
    parser.add_argument("--precision", default="tf32", choices=[p for p in PRECISIONS if p != "float32"])
    parser.add_argument("--store", type=Path, help="the portable store (default: figures/data/paper/)")
    parser.add_argument("--data", type=Path, help="the data folder (default: LTH_DATA, else torchvision's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda where there is one)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    store = args.store or portable_store("paper")
    data = load_dataset(architecture(args.network).dataset, args.data, default_device(args.device))
    try:
        table, verdict = side_by_side(args.network, args.precision, data, store)
    except LookupError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0 if verdict else 3


if __name__ == "__main__":
    sys.exit(main())
