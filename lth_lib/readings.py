"""What each notebook's Reading says: numbers computed from the results it drew, beside
the paper's claims, each claim with a verdict by one stated rule (`RULE`).

A notebook ends with `params.reading()` (`NotebookParameters.reading`):
- `notebook_facts` reads the compact tables a reading needs off the stored results of what
  the notebook draws: per experiment, kind and level the early stop and test accuracy
  (mean, min, max over the networks); weight travel per layer; the first layer's masks by
  pixel group; the stability barriers.
- `save_facts` keeps them beside the figures: `<figures>/readings/<notebook>.json`
  (figures/readings/ for `cpu`, figures/paper/readings/ for `paper`).
- `render` writes the Reading from the facts alone.

The README's figure sections are generated from the committed facts by the same code
(`readme_section`, through cog: `python -m lth_lib.readings`), and tests/test_readings.py
checks that every kept notebook's Reading and every README block is what `render` gives
for the committed facts, and that the `paper` facts are what the committed paper-scale
results give. So no number a reader sees is typed by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lth_lib.paths import PROJECT, atomic_write
from lth_lib.protocol import DROPOUT_ITERATIONS, STABLE_BELOW, Experiment, network_protocol

RULE = (
    "**reproduced**: the effect goes the paper's way and is at least half the size it reports (a claim of "
    "no difference: within 0.5 points; a claim over a range of levels: it holds at every level of the range "
    "the run has); **close**: it goes the paper's way but is smaller (no difference: within 1 point; a range: "
    "at more than half its levels); **not**: otherwise; **not covered**: the run does not reach that point "
    "(a sparsity, or an early stop before its last iteration)."
)
# The committed scales, and where their figures and facts are (as notebook.COMMITTED_FIGURES).
FACTS_DIRS = {"paper": "figures/paper/readings", "cpu": "figures/readings"}
NOT_COVERED = "not covered"


# ---------------------------------------------------------------------------------------
# Facts: the compact tables, from the results


def notebook_facts(params) -> dict:
    """The facts of the Reading of the notebook `params` (a NotebookParameters) is for, from
    what it draws: its experiments' stored results (`params.run`), and for `weight_travel`,
    `tickets` and `rewinding` their own measurements of them."""
    drawn = {
        network: {label: params.run(e) for label, e in by_label.items()}
        for network, by_label in params.experiments().items()
    }
    extra: dict = {}
    if params.notebook == "weight_travel":
        from lth_lib.travel import weight_travel

        results = next(iter(drawn.values()))["iterative"]
        extra["level"] = results.level_near(params.ticket_percent)
        extra["travel"] = weight_travel(results, extra["level"])
    elif params.notebook == "tickets" and "lenet300" in drawn:
        extra["data"] = params.data("lenet300", device="cpu")
    elif params.notebook == "rewinding":
        extra["stability"] = {}
        for network, by_k in drawn.items():
            level = next(iter(by_k.values())).level_near(params.ticket_percent)
            found = [params.stability(results, at) for results in by_k.values() for at in (0, level)]
            extra["stability"][network] = [point for point in found if point is not None]
    return facts(params.notebook, params.scale, drawn, **extra)


def facts(notebook: str, scale: str, drawn: Mapping[str, Mapping[str, object]], **extra) -> dict:
    """The facts of `notebook`'s Reading at `scale`: `drawn` holds its results per network
    and drawing label ({"lenet300": {"iterative": Results}}); `extra` the notebook's own
    measurements (`travel`: lth.weight_travel's table and `level`; `stability`: per network
    its lth.Stability points; `data`: the MNIST data set, for the pixel groups)."""
    out = {"notebook": notebook, "scale": scale, "experiments": [], "levels": []}
    for network, by_label in drawn.items():
        for label, results in by_label.items():
            out["experiments"].append(_experiment_facts(network, label, results))
            for row in results.summary().itertuples():
                out["levels"].append(
                    {
                        "network": network,
                        "drawing": label,
                        "kind": row.kind,
                        "level": int(row.level),
                        "percent": float(row.percent_remaining),
                        "members": int(row.members),
                        "stop_mean": float(row.early_stop_iteration_mean),
                        "stop_min": int(row.early_stop_iteration_min),
                        "stop_max": int(row.early_stop_iteration_max),
                        "acc_mean": float(row.early_stop_test_acc_mean),
                        "acc_min": float(row.early_stop_test_acc_min),
                        "acc_max": float(row.early_stop_test_acc_max),
                    }
                )
    if "travel" in extra:
        out["travel"] = _travel_facts(extra["travel"], extra["level"], drawn)
    if "stability" in extra:
        out["stability"] = [
            {
                "network": network,
                "k": point.rewind_iteration,
                "level": point.level,
                "percent": point.percent_remaining,
                "ends": (point.errors[0] + point.errors[-1]) / 2,
                "barrier": point.instability,
            }
            for network, points in extra["stability"].items()
            for point in points
        ]
    if "data" in extra:
        out["masks"] = _mask_facts(drawn, extra["data"])
    return out


def _experiment_facts(network: str, label: str, results) -> dict:
    exp: Experiment = results.experiment
    return {
        "network": network,
        "drawing": label,
        "iterations": exp.training.iterations,
        "paper_iterations": network_protocol(network).iterations
        * (DROPOUT_ITERATIONS if exp.training.dropout else 1),
        "rounds": exp.pruning.rounds,
        "levels_done": results.levels_done,
        "trials": exp.trials,
        "control_trials": exp.control_trials if exp.controls else 0,
        "eval_examples": exp.training.eval_examples,
        "eval_every": exp.training.eval_every,
        "data_copy": exp.data_copy,
        "rewind_iteration": exp.pruning.rewind_iteration,
        "lr": exp.training.lr,
    }


def _travel_facts(travel, level: int, drawn) -> dict:
    from lth_lib.travel import travel_summary

    (results,) = [r for by_label in drawn.values() for r in by_label.values()]
    rows = travel_summary(travel).to_dict("records")
    return {
        "level": level,
        "percent": results.percent_remaining(level),
        "layers": [
            {
                "layer": r["layer"],
                "in_ticket": bool(r["in_ticket"]),
                "weights": int(r["weights"]),
                "mean_travel": float(r["mean_travel"]),
                "away_from_zero": float(r["fraction_away_from_zero"]),
            }
            for r in rows
        ],
    }


def _mask_facts(drawn, data) -> dict:
    """LeNet's first layer by how often its pixels are inked in the training images (never,
    in under 2%, more often): the fraction of their weights the tickets keep per level
    (mean over trials); Conv-2's first layer at its last level: the fraction kept per
    kernel position, colour channel and filter (trial 0)."""
    out = {}
    if "lenet300" in drawn and data.name == "mnist":
        results = drawn["lenet300"]["iterative"]
        ink = (data.train_x.reshape(len(data.train_x), -1) > 0).float().mean(0)
        groups = {"never": ink == 0, "rare": (ink > 0) & (ink < 0.02), "common": ink >= 0.02}
        rows = []
        for level, masks in sorted(results.masks.items()):
            first = [next(iter(mask.values())).float() for mask in masks]  # [300, 784] per trial
            row = {"level": level, "percent": results.percent_remaining(level)}
            row["layer"] = statistics.fmean(float(m.mean()) for m in first)
            for name, pixels in groups.items():
                row[name] = statistics.fmean(float(m[:, pixels].mean()) for m in first)
            never = [int(m[:, groups["never"]].sum()) for m in first]
            row["never_weights_min"], row["never_weights_max"] = min(never), max(never)
            rows.append(row)
        out["lenet300"] = {"pixels": {name: int(p.sum()) for name, p in groups.items()}, "levels": rows}
    if "conv2" in drawn:
        results = drawn["conv2"]["iterative"]
        level = max(results.masks)
        first = next(iter(results.masks[level][0].values())).float()  # [filters, channels, k, k]
        spread = {
            "position": first.mean(dim=(0, 1)),
            "channel": first.mean(dim=(0, 2, 3)),
            "filter": first.mean(dim=(1, 2, 3)),
        }
        out["conv2"] = {
            "level": level,
            "percent": results.percent_remaining(level),
            "kept": float(first.mean()),
            "filters": first.shape[0],
            **{
                f"{name}_{end}": float(getattr(values, end)())
                for name, values in spread.items()
                for end in ("min", "max")
            },
        }
    return out


def save_facts(found: dict, figures_dir: str | Path) -> Path:
    """Write `found` to <figures_dir>/readings/<notebook>.json, whole or not at all."""
    path = Path(figures_dir) / "readings" / f"{found['notebook']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(found, indent=1, sort_keys=True) + "\n").encode())
    return path


def committed_facts(notebook: str, scale: str, root: Path | None = None) -> dict | None:
    """The committed facts of `notebook` at `scale` (None where that scale has none)."""
    path = (root or PROJECT or Path.cwd()) / FACTS_DIRS[scale] / f"{notebook}.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------------------
# Reading the facts


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, what the run measured, and the verdict by `RULE`."""

    paper: str
    measured: str
    verdict: str


def effect(measured: float, paper: float) -> str:
    """The verdict for an effect the paper reports as `paper` (> 0), measured signed so that
    positive goes the paper's way."""
    return "reproduced" if measured >= paper / 2 else "close" if measured > 0 else "not"


def no_difference(measured: float) -> str:
    """The verdict for a claim of no difference, `measured` in points."""
    return "reproduced" if abs(measured) <= 0.5 else "close" if abs(measured) <= 1 else "not"


def holds(count: int, total: int) -> str:
    """The verdict for a claim over a range of levels: it holds at `count` of `total`."""
    if total == 0:
        return NOT_COVERED
    return "reproduced" if count == total else "close" if count > total / 2 else "not"


class Facts:
    """Queries over one notebook's facts at one scale."""

    def __init__(self, found: Mapping):
        self.found, self.scale = found, found["scale"]

    def experiment(self, network: str, drawing: str) -> dict:
        return next(
            e for e in self.found["experiments"] if e["network"] == network and e["drawing"] == drawing
        )

    def has(self, network: str, drawing: str) -> bool:
        return any(e["network"] == network and e["drawing"] == drawing for e in self.found["experiments"])

    def rows(self, network: str, drawing: str, kind: str = "ticket") -> list[dict]:
        """The levels of one kind, dense first (for tickets), sparsest last."""
        found = [
            r
            for r in self.found["levels"]
            if (r["network"], r["drawing"], r["kind"]) == (network, drawing, kind)
        ]
        return sorted(found, key=lambda r: r["level"])

    def row(self, network: str, drawing: str, level: int, kind: str = "ticket") -> dict | None:
        return next((r for r in self.rows(network, drawing, kind) if r["level"] == level), None)

    def at(self, network: str, drawing: str, percent: float) -> dict | None:
        """The ticket level at about `percent` of the weights (within 10% of it), else None."""
        near = [r for r in self.rows(network, drawing)[1:] if abs(r["percent"] - percent) <= 0.1 * percent]
        return min(near, key=lambda r: abs(r["percent"] - percent)) if near else None


def pct(fraction: float) -> str:
    """An accuracy or a fraction in percent, two decimals."""
    return f"{100 * fraction:.2f}%"


def points(difference: float) -> str:
    """A difference of two fractions in points, signed, two decimals."""
    return f"{100 * difference:+.2f}"


def kept(percent: float) -> str:
    """Weights remaining, three significant digits: 80%, 21.1%, 6.95%, 1.23%."""
    return f"{percent:.3g}%"


def _range(low: int, high: int) -> str:
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def its(iteration: float) -> str:
    return f"{iteration:,.0f}"


def sooner(ticket: dict, dense: dict) -> float:
    """How much sooner (percent) `ticket` reaches early stop than `dense`."""
    return 100 * (1 - ticket["stop_mean"] / dense["stop_mean"])


def _claims_table(claims: list[Claim], scale: str) -> str:
    lines = [f"| the paper | this run (`{scale}`) | verdict |", "| --- | --- | --- |"]
    lines += [f"| {c.paper} | {c.measured} | {c.verdict} |" for c in claims]
    return "\n".join(lines)


def _coverage(f: Facts, network: str, drawing: str) -> str:
    """E.g. "5,000 of 50,000 iterations, 12 rounds to 6.95%, 2 trials"."""
    e = f.experiment(network, drawing)
    done = e["levels_done"] - 1
    rounds = f"{done} of {e['rounds']}" if done < e["rounds"] else f"{e['rounds']}"
    rounds += " round" if e["rounds"] == 1 else " rounds"
    sparsest = f.rows(network, drawing)[-1]["percent"]
    trials = f"{e['trials']} trial{'s' if e['trials'] != 1 else ''}"
    evaluation = f", metrics on {e['eval_examples']:,}-example subsets" if e["eval_examples"] else ""
    length = f"{e['iterations']:,}" + (
        f" of {e['paper_iterations']:,}" if e["iterations"] != e["paper_iterations"] else ""
    )
    return f"{length} iterations, {rounds} to {kept(sparsest)}, {trials}{evaluation}"


def _spread(f: Facts, network: str, drawing: str) -> float:
    """The median over pruned levels of the tickets' min-max spread of test accuracy."""
    rows = f.rows(network, drawing)[1:]
    return statistics.median(r["acc_max"] - r["acc_min"] for r in rows) if rows else math.nan


# ---------------------------------------------------------------------------------------
# One function per notebook: (the paper's claim, claims, what the run shows, where it differs)

LENET = "lenet300"
CONV = ("conv2", "conv4", "conv6")
NAMES = {
    "lenet300": "LeNet-300-100", "conv2": "Conv-2", "conv4": "Conv-4", "conv6": "Conv-6",
    "vgg19": "VGG-19", "resnet20": "ResNet-20",
}  # fmt: skip
DEEPER = ("resnet20", "vgg19")
# Section 4 (I.5): with warm-up, winning tickets down to this percent of the weights remaining
WARMUP_TICKETS_DOWN_TO = {"vgg19": 1.5, "resnet20": 11.8}
MATCHING = 0.002  # within 0.2 points of the dense network's accuracy: "matching" (Frankle et al. 2020)


@dataclass(frozen=True)
class Reading:
    """A notebook's reading, in parts the README shares."""

    paper: str  # what the paper reports (prose over the paper's own numbers)
    claims: list[Claim]
    shows: str  # what the run shows, every number from the facts
    differs: str  # where and why it differs


def _lenet_claims(f: Facts) -> list[Claim]:
    dense = f.row(LENET, "iterative", 0)
    claims = []
    at21, at13, at36 = (f.at(LENET, "iterative", p) for p in (21.1, 13.5, 3.6))
    claims.append(
        Claim(
            "Tickets at about 21% reach early stop about 38% sooner than the full network",
            f"{sooner(at21, dense):.0f}% sooner at {kept(at21['percent'])} ({its(at21['stop_mean'])} vs "
            f"{its(dense['stop_mean'])})",
            effect(sooner(at21, dense), 38),
        )
        if at21
        else Claim(
            "Tickets at about 21% reach early stop about 38% sooner than the full network",
            "no level near 21%",
            NOT_COVERED,
        )
    )
    if at13:
        gap = at13["acc_mean"] - dense["acc_mean"]
        measured = f"{points(gap)} points at {kept(at13['percent'])} ({pct(at13['acc_mean'])} vs {pct(dense['acc_mean'])})"
        claims.append(
            Claim("At about 13.5% they are about 0.3 points more accurate", measured, effect(100 * gap, 0.3))
        )
    else:
        claims.append(
            Claim(
                "At about 13.5% they are about 0.3 points more accurate", "no level near 13.5%", NOT_COVERED
            )
        )
    if at36:
        gap = at36["acc_mean"] - dense["acc_mean"]
        measured = f"{points(gap)} points at {kept(at36['percent'])}"
        claims.append(
            Claim(
                "Near 3.6% they are back at the full network's accuracy", measured, no_difference(100 * gap)
            )
        )
    else:
        sparsest = f.rows(LENET, "iterative")[-1]["percent"]
        claims.append(
            Claim(
                "Near 3.6% they are back at the full network's accuracy",
                f"the run stops at {kept(sparsest)}",
                NOT_COVERED,
            )
        )
    return claims


def _lenet_mnist(f: Facts) -> Reading:
    network = f.found["experiments"][0]["network"]  # LeNet-300-100 unless the notebook was given another
    dense = f.row(network, "iterative", 0)
    tickets = f.rows(network, "iterative")[1:]
    better = [r for r in tickets if r["acc_mean"] > dense["acc_mean"]]
    labelled = [r for p in (21.1, 13.5, 6.95, 3.6, 1.2) if (r := f.at(network, "iterative", p))]
    shown = "; ".join(
        f"at {kept(r['percent'])}, {pct(r['acc_mean'])}, stopping at {its(r['stop_mean'])}"
        f" ({abs(sooner(r, dense)):.0f}% {'sooner' if sooner(r, dense) >= 0 else 'later'})"
        for r in labelled
    )
    controls = [
        f"{name} reaches {pct(rows[-1]['acc_mean'])} at {kept(rows[-1]['percent'])} (stopping at {its(rows[-1]['stop_mean'])})"
        for kind, name in (("reinit", "random reinitialisation"), ("random_prune", "random pruning"))
        if (rows := f.rows(network, "iterative", kind))
    ]
    e = f.experiment(network, "iterative")
    shows = (
        f"({_coverage(f, network, 'iterative')}; means over the trials.) The dense network stops early at iteration "
        f"{its(dense['stop_mean'])} with {pct(dense['acc_mean'])} test accuracy. The tickets are more accurate than it "
        f"at {len(better)} of the {len(tickets)} pruned levels"
        + (f" ({kept(better[0]['percent'])} to {kept(better[-1]['percent'])})" if better else "")
        + (f": {shown}." if shown else ".")
        + (f" Beside them, {' and '.join(controls)}." if controls else "")
    )
    spread = (
        f" The trials' accuracies at one level span {100 * _spread(f, network, 'iterative'):.2f} points (median over the "
        "levels), so differences of that size are within the min-max bars."
        if e["trials"] > 1
        else " With one trial, nothing shows how much of a difference is noise."
    )
    if e["iterations"] == e["paper_iterations"]:
        differs = "This is the paper's protocol." + spread
    else:
        differs = (
            f"Training is {e['paper_iterations'] / e['iterations']:.0f}x shorter than the paper's, so the early stops sit in a "
            f"compressed range, and the run stops at {kept(tickets[-1]['percent'])}.{spread} The `paper` scale runs the "
            "full protocol."
        )
    return Reading(
        "Winning tickets learn faster and reach higher test accuracy than the full network as the weights "
        "remaining fall to about 21% (early stop about 38% sooner there), are about 0.3 points more accurate "
        "near 13.5%, and are back at the full network's accuracy near 3.6%. Randomly reinitialised tickets "
        "fall off the original accuracy from about 21%.",
        _lenet_claims(f) if network == LENET else [],
        shows,
        differs,
    )


def _controls(f: Facts) -> Reading:
    claims, shows = [], []
    if f.has(LENET, "iterative"):
        dense = f.row(LENET, "iterative", 0)
        at21 = f.at(LENET, "iterative", 21.1)
        reinit21 = at21 and f.row(LENET, "iterative", at21["level"], "reinit")
        if reinit21:
            ratio = reinit21["stop_mean"] / at21["stop_mean"]
            gap = at21["acc_mean"] - reinit21["acc_mean"]
            claims.append(
                Claim(
                    "At about 21%, tickets reach early stop 2.51x sooner than reinitialised",
                    f"{ratio:.2f}x at {kept(at21['percent'])}",
                    effect(ratio - 1, 1.51),
                )
            )
            claims.append(
                Claim(
                    "... and are about half a point more accurate",
                    f"{points(gap)} points",
                    effect(100 * gap, 0.5),
                )
            )
        below = [
            (r, t)
            for r in f.rows(LENET, "iterative", "reinit")
            if r["percent"] <= 21.1 * 1.1 and (t := f.row(LENET, "iterative", r["level"]))
        ]
        claims.append(
            Claim(
                "Reinitialised tickets are below the full network's accuracy from about 21%",
                f"below at {sum(r['acc_mean'] < dense['acc_mean'] for r, _ in below)} of {len(below)} levels",
                holds(sum(r["acc_mean"] < dense["acc_mean"] for r, _ in below), len(below)),
            )
        )
        gaps = {
            kind: [
                (t, t["acc_mean"] - r["acc_mean"])
                for r in f.rows(LENET, "iterative", kind)
                if (t := f.row(LENET, "iterative", r["level"]))
            ]
            for kind in ("reinit", "random_prune")
        }
        last = f.rows(LENET, "iterative")[-1]
        text = f"**{NAMES[LENET]}** ({_coverage(f, LENET, 'iterative')})"
        if reinit21:
            text += (
                f": at {kept(at21['percent'])}, the tickets reach early stop {ratio:.2f}x sooner than their reinitialised "
                f"copies, at {points(gap)} points of test accuracy against them"
            )
            prune21 = f.row(LENET, "iterative", at21["level"], "random_prune")
            if prune21:
                text += (
                    f" ({prune21['stop_mean'] / at21['stop_mean']:.2f}x and {points(at21['acc_mean'] - prune21['acc_mean'])} "
                    "against random pruning)"
                )
        finals = [
            f"{points(g)} points against {name}"
            for kind, name in (("reinit", "random reinitialisation"), ("random_prune", "random pruning"))
            for t, g in gaps[kind][-1:]
        ]
        if finals:
            text += f". At {kept(last['percent'])} the tickets stand at {' and '.join(finals)}"
        shows.append(text + ".")
    for network in CONV:
        if not f.has(network, "iterative"):
            continue
        pairs = [
            (r, p)
            for r in f.rows(network, "iterative", "reinit")
            if (p := f.row(network, "iterative", r["level"], "random_prune"))
        ]
        if pairs:
            apart = max(abs(r["acc_mean"] - p["acc_mean"]) for r, p in pairs)
            claims.append(
                Claim(
                    f"{NAMES[network]}: random reinitialisation and random pruning perform about the same",
                    f"at most {100 * apart:.2f} points apart over {len(pairs)} levels",
                    no_difference(100 * apart),
                )
            )
            ahead = [
                f.row(network, "iterative", r["level"])["acc_mean"] - max(r["acc_mean"], p["acc_mean"])
                for r, p in pairs
            ]
            shows.append(
                f"**{NAMES[network]}** ({_coverage(f, network, 'iterative')}): the tickets are "
                f"{100 * min(ahead):.2f} to {100 * max(ahead):.2f} points above the better control at each level, "
                f"and the two controls at most {100 * apart:.2f} points apart."
            )
    return Reading(
        "What makes a winning ticket is both its mask and its initial values. Reinitialised LeNet tickets fall "
        "off the original accuracy from about 21% of the weights remaining, while winning tickets hold on to "
        "about 2.9%. At 21%, the winning ticket reaches minimum validation loss 2.51x sooner than when "
        "reinitialised and is half a point more accurate. For the Conv networks, random reinitialisation and "
        "random pruning perform about the same (Appendix E).",
        claims,
        " ".join(shows),
        _short_runs_text(f, [n for n in (LENET, *CONV) if f.has(n, "iterative")], "iterative"),
    )


def _short_runs_text(f: Facts, networks: list[str], drawing: str) -> str:
    """Where a run differs from the paper by its length and trials."""
    if not networks:
        return ""
    short = [
        n
        for n in networks
        if f.experiment(n, drawing)["iterations"] < f.experiment(n, drawing)["paper_iterations"]
    ]
    if not short:
        return (
            "This is the paper's protocol; differences within the min-max bars are within the trials' spread."
        )
    parts = [
        f"{NAMES[n]} {f.experiment(n, drawing)['iterations']:,} of {f.experiment(n, drawing)['paper_iterations']:,} "
        f"iterations, {f.experiment(n, drawing)['trials']} trial{'s' if f.experiment(n, drawing)['trials'] != 1 else ''}"
        for n in short
    ]
    single = any(f.experiment(n, drawing)["trials"] == 1 for n in short)
    return (
        f"The runs are shorter than the paper's ({'; '.join(parts)}), so networks still improving at the end stop "
        "early at their last iteration"
        + (", and a single trial shows nothing of the noise between trials" if single else "")
        + ". The `paper` scale runs the full protocol."
    )


def _oneshot_vs_iterative(f: Facts) -> Reading:
    claims, shows = [], []
    if f.has(LENET, "one-shot"):
        dense = f.row(LENET, "iterative", 0)
        oneshot = f.rows(LENET, "one-shot")[1:]
        faster = [r for r in oneshot if 17.6 / 1.1 <= r["percent"] <= 67.5 * 1.1]
        accurate = [r for r in oneshot if 5.17 / 1.1 <= r["percent"] <= 95 * 1.1]
        n_faster = sum(r["stop_mean"] < dense["stop_mean"] for r in faster)
        n_accurate = sum(r["acc_mean"] > dense["acc_mean"] for r in accurate)
        claims.append(
            Claim(
                "LeNet one-shot tickets at 67.5%-17.6% reach early stop sooner than the full network",
                f"sooner at {n_faster} of {len(faster)} levels",
                holds(n_faster, len(faster)),
            )
        )
        claims.append(
            Claim(
                "... and at 95%-5.17% they are more accurate",
                f"more accurate at {n_accurate} of {len(accurate)} levels",
                holds(n_accurate, len(accurate)),
            )
        )
        last_os, last_it = oneshot[-1], f.rows(LENET, "iterative")[len(oneshot)]
        gap = last_it["acc_mean"] - last_os["acc_mean"]
        claims.append(
            Claim(
                "Iterative pruning finds smaller winning tickets",
                f"at {kept(last_os['percent'])}, iterative {points(gap)} points above one-shot",
                "reproduced" if gap > 0 else "not",
            )
        )
        text = f"**{NAMES[LENET]}** ({_coverage(f, LENET, 'one-shot')}): the dense network stops at "
        text += f"{its(dense['stop_mean'])} with {pct(dense['acc_mean'])}."
        if faster:
            stops = [r["stop_mean"] for r in faster]
            text += (
                f" One-shot tickets at {kept(faster[0]['percent'])}-{kept(faster[-1]['percent'])} stop at "
                f"{its(min(stops))}-{its(max(stops))}."
            )
        if accurate:
            accs = [r["acc_mean"] for r in accurate]
            text += (
                f" At {kept(accurate[0]['percent'])}-{kept(accurate[-1]['percent'])} they reach "
                f"{pct(min(accs))}-{pct(max(accs))}."
            )
        shows.append(
            text
            + f" At {kept(last_os['percent'])}, one-shot tickets reach {pct(last_os['acc_mean'])} stopping at "
            f"{its(last_os['stop_mean'])}, iterative ones {pct(last_it['acc_mean'])} stopping at "
            f"{its(last_it['stop_mean'])}."
        )
    if f.has("conv2", "one-shot"):
        dense = f.row("conv2", "iterative", 0)
        last_os = f.rows("conv2", "one-shot")[-1]
        last_it = f.row("conv2", "iterative", last_os["level"])
        shows.append(
            f"**{NAMES['conv2']}** ({_coverage(f, 'conv2', 'one-shot')}): at {kept(last_os['percent'])}, one-shot "
            f"{pct(last_os['acc_mean'])} and iterative {pct(last_it['acc_mean'])} against the dense network's "
            f"{pct(dense['acc_mean'])}."
        )
    return Reading(
        "One-shot pruning finds winning tickets too. For LeNet, one-shot tickets at 67.5%-17.6% of the weights "
        "reach early stop sooner than the full network, and at 95%-5.17% they are more accurate. Iterative "
        "pruning finds smaller winning tickets.",
        claims,
        " ".join(shows),
        _short_runs_text(f, [n for n in (LENET, "conv2") if f.has(n, "one-shot")], "one-shot")
        + " Each one-shot level prunes the trained dense network once, to exactly the per-layer counts of the "
        "same number of iterative rounds.",
    )


# Figure 5: up to how many times sooner, and how many points more accurate, per network
CONV_CLAIMS = {"conv2": (3.5, 3.4), "conv4": (3.5, 3.5), "conv6": (2.5, 3.3)}


def _conv_cifar10(f: Facts) -> Reading:
    claims, rows = [], []
    for network in CONV:
        if not f.has(network, "iterative"):
            continue
        dense, tickets = f.row(network, "iterative", 0), f.rows(network, "iterative")[1:]
        fastest = max(tickets, key=lambda r: dense["stop_mean"] / r["stop_mean"])
        best = max(tickets, key=lambda r: r["acc_mean"])
        ratio = dense["stop_mean"] / fastest["stop_mean"]
        paper_ratio, paper_gain = CONV_CLAIMS[network]
        e = f.experiment(network, "iterative")
        last_everywhere = all(r["stop_min"] == e["iterations"] for r in f.rows(network, "iterative"))
        claims.append(
            Claim(
                f"{NAMES[network]}: early stop up to {paper_ratio}x sooner",
                "every network stops at its last iteration",
                NOT_COVERED,
            )
            if last_everywhere
            else Claim(
                f"{NAMES[network]}: early stop up to {paper_ratio}x sooner",
                f"{ratio:.2f}x",
                effect(ratio - 1, paper_ratio - 1),
            )
        )
        gain = best["acc_mean"] - dense["acc_mean"]
        claims.append(
            Claim(
                f"{NAMES[network]}: up to {paper_gain} points more accurate",
                f"{points(gain)} at {kept(best['percent'])}",
                effect(100 * gain, paper_gain),
            )
        )
        controls = ", ".join(
            f"{name} {pct(r['acc_mean'])}"
            for kind, name in (("reinit", "reinit"), ("random_prune", "random pruning"))
            if (r := f.row(network, "iterative", best["level"], kind))
        )
        rows.append(
            f"| {NAMES[network]} ({_coverage(f, network, 'iterative')}) | {pct(dense['acc_mean'])}, stop "
            f"{its(dense['stop_mean'])} | {pct(best['acc_mean'])} at {kept(best['percent'])} | {controls} | "
            f"{'the last iteration everywhere' if last_everywhere else f'up to {ratio:.2f}x sooner'} |"
        )
    table = "\n".join(
        [
            "| | dense | best ticket | controls at its level | early stop |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    return Reading(
        "Over 20,000-30,000 iterations, the Conv networks' winning tickets reach early stop up to 3.5x (Conv-2), "
        "3.5x (Conv-4) and 2.5x (Conv-6) sooner, are up to 3.4, 3.5 and 3.3 points more accurate, and stay above "
        "the original accuracy down to about 2% of the weights. Reinitialised tickets degrade steadily.",
        claims,
        table,
        _short_runs_text(f, [n for n in CONV if f.has(n, "iterative")], "iterative")
        + _lossy_copy_text(f, CONV),
    )


def _lossy_copy_text(f: Facts, networks: tuple[str, ...]) -> str:
    """A note on a JPEG copy of the data, where the run used one."""
    copies = sorted({e["data_copy"] for e in f.found["experiments"] if e["network"] in networks})
    lossy = [copy for copy in copies if "jpeg" in copy]
    return f" The data copy used ({', '.join(lossy)}) is JPEG-encoded, which is lossy." if lossy else ""


# Figure 6: points dropout adds to the dense network, and pruning adds on top, per network
DROPOUT_CLAIMS = {"conv2": (2.1, 2.3), "conv4": (3.0, 4.6), "conv6": (2.4, 4.7)}


def _dropout(f: Facts) -> Reading:
    claims, shows = [], []
    for network in CONV:
        if not f.has(network, "dropout"):
            continue
        with_, without = f.row(network, "dropout", 0), f.row(network, "no dropout", 0)
        tickets = f.rows(network, "dropout")[1:]
        best = max(tickets, key=lambda r: r["acc_mean"])
        adds, prune_adds = with_["acc_mean"] - without["acc_mean"], best["acc_mean"] - with_["acc_mean"]
        paper_adds, paper_prune = DROPOUT_CLAIMS[network]
        claims.append(
            Claim(
                f"{NAMES[network]}: dropout adds {paper_adds} points to the dense network",
                points(adds),
                effect(100 * adds, paper_adds),
            )
        )
        claims.append(
            Claim(
                f"{NAMES[network]}: pruning adds up to {paper_prune} more",
                f"{points(prune_adds)} at {kept(best['percent'])}",
                effect(100 * prune_adds, paper_prune),
            )
        )
        reinit = f.row(network, "dropout", best["level"], "reinit")
        shows.append(
            f"{NAMES[network]} ({_coverage(f, network, 'dropout')}): dense {pct(with_['acc_mean'])} with dropout against "
            f"{pct(without['acc_mean'])} without; its best ticket {pct(best['acc_mean'])} at {kept(best['percent'])}"
            + (
                f", {points(best['acc_mean'] - reinit['acc_mean'])} points above its random reinitialisation"
                if reinit
                else ""
            )
            + "."
        )
    return Reading(
        "With dropout (rate 0.5, trained three times as long), the dense Conv-2, Conv-4 and Conv-6 are 2.1, 3.0 "
        "and 2.4 points more accurate than without, and iterative pruning adds up to 2.3, 4.6 and 4.7 points more; "
        "pruned networks still reach early stop sooner, less markedly for Conv-2.",
        claims,
        " ".join(shows),
        _short_runs_text(f, [n for n in CONV if f.has(n, "dropout")], "dropout")
        + " Short runs favour the networks without dropout, which learn faster early on. The paper does not say "
        "which layers it applies dropout to (here the hidden fully connected layers')."
        + _lossy_copy_text(f, CONV),
    )


def _weight_travel(f: Facts) -> Reading:
    travel = f.found["travel"]
    layers = {}
    for r in travel["layers"]:
        layers.setdefault(r["layer"], {})["ticket" if r["in_ticket"] else "pruned"] = r
    both = {name: sides for name, sides in layers.items() if {"ticket", "pruned"} <= set(sides)}
    farther = sum(s["ticket"]["mean_travel"] > s["pruned"]["mean_travel"] for s in both.values())
    away = sum(s["ticket"]["away_from_zero"] > s["pruned"]["away_from_zero"] for s in both.values())
    claims = [
        Claim(
            "Winning-ticket weights move further in training than the rest",
            f"in {farther} of {len(both)} layers",
            holds(farther, len(both)),
        ),
        Claim(
            "... and are more likely to move away from zero",
            f"in {away} of {len(both)} layers",
            holds(away, len(both)),
        ),
    ]
    per_layer = "; ".join(
        f"`{name}`: {s['ticket']['mean_travel']:.4f} against {s['pruned']['mean_travel']:.4f}, "
        f"{pct(s['ticket']['away_from_zero'])} against {pct(s['pruned']['away_from_zero'])}"
        for name, s in both.items()
    )
    e = f.found["experiments"][0]
    shows = (
        f"(The dense network after {e['iterations']:,} iterations, {e['trials']} trial{'s' if e['trials'] != 1 else ''}, "
        f"split by the {kept(travel['percent'])} ticket.) Mean travel |θ_T - θ_0| of ticket against pruned weights, and "
        f"the fraction that grew in magnitude: {per_layer}."
    )
    return Reading(
        "Winning-ticket weights change more in training than the rest of the network, and are more likely to move "
        "away from zero (Appendix F.5).",
        claims,
        shows,
        "Part of the effect comes from how the ticket is chosen: the first pruning round keeps the weights of this "
        "dense network that end training largest, so weights that grew are more likely to survive. The spike at "
        "zero travel is the `fc1` weights from MNIST's never-inked border pixels, which get no gradient.",
    )


def _tickets(f: Facts) -> Reading:
    masks, shows = f.found.get("masks", {}), []
    if "lenet300" in masks:
        lenet, rows = masks["lenet300"], masks["lenet300"]["levels"][1:]
        picked = [min(rows, key=lambda r, p=p: abs(r["percent"] - p)) for p in (41, 21.1, 7, 2.9)]
        picked = [r for i, r in enumerate(picked) if r not in picked[:i]]
        steps = "; ".join(
            f"at {kept(r['percent'])} of the network they keep {pct(r['never'])} of their weights "
            f"({_range(r['never_weights_min'], r['never_weights_max'])} weights per trial) against the layer's {pct(r['layer'])}"
            for r in picked
        )
        ends = [picked[-1], rows[-1]] if picked[-1] is not rows[-1] else [rows[-1]]
        rare = f"{pct(ends[0]['rare'])} of their weights at {kept(ends[0]['percent'])}"
        rare += "".join(f" and {pct(r['rare'])} at {kept(r['percent'])}" for r in ends[1:])
        common = " and ".join(pct(r["common"]) for r in ends)
        shows.append(
            f"**{NAMES[LENET]}** ({_coverage(f, LENET, 'iterative')}): the {lenet['pixels']['never']} pixels black in every "
            f"training image lose their weights first: {steps}. The {lenet['pixels']['rare']} pixels inked in under 2% of "
            f"the images keep {rare}, the {lenet['pixels']['common']} more often inked ones {common}."
        )
    if "conv2" in masks:
        c = masks["conv2"]
        shows.append(
            f"**{NAMES['conv2']}** ({_coverage(f, 'conv2', 'iterative')}): at {kept(c['percent'])} its first conv layer keeps "
            f"{pct(c['kept'])}: each kernel position {pct(c['position_min'])}-{pct(c['position_max'])} over the "
            f"{c['filters']} filters, each colour channel {pct(c['channel_min'])}-{pct(c['channel_max'])}, each filter "
            f"{pct(c['filter_min'])}-{pct(c['filter_max'])}."
        )
    return Reading(
        "The paper shows how tickets train, not the masks: this notebook adds the masks. Its appendix on weight "
        "travel explains part of what they show: magnitude pruning keeps the weights that end training largest.",
        [],
        " ".join(shows),
        "Nothing to compare with in the paper. The pictures show trial 0's masks; the numbers above average the "
        "trials (Conv-2's: trial 0). Weights that get no gradient stay at their small initial values, so magnitude "
        "pruning removes them first.",
    )


def _rewinding(f: Facts) -> Reading:
    claims, shows = [], []
    points_ = f.found.get("stability", [])
    for network in (LENET, "conv2"):
        labels = [e["drawing"] for e in f.found["experiments"] if e["network"] == network]
        if not labels:
            continue
        dense = f.row(network, labels[0], 0)
        level = f.at(network, labels[0], 21.1) or f.rows(network, labels[0])[-1]
        accs = ", ".join(
            f"{label}: {pct(r['acc_mean'])}"
            for label in labels
            if (r := f.row(network, label, level["level"]))
        )
        text = (
            f"**{NAMES[network]}** ({_coverage(f, network, labels[0])}): at {kept(level['percent'])} the tickets reach "
            f"{accs} (dense {pct(dense['acc_mean'])})."
        )
        mine = [p for p in points_ if p["network"] == network]
        if mine:
            barriers = [100 * p["barrier"] for p in mine]
            stable = sum(p["barrier"] < STABLE_BELOW for p in mine)
            ks = ", ".join(f"{k:,}" for k in sorted({p["k"] for p in mine}))
            text += (
                f" The error barrier between two copies is {min(barriers):.2f}-{max(barriers):.2f} points over "
                f"{len(mine)} pairs (k = {ks}; dense and the {kept(mine[-1]['percent'])} ticket), {stable} of them "
                f"below {100 * STABLE_BELOW:.0f} points."
            )
            if network == LENET:
                claims.append(
                    Claim(
                        f"LeNet-300-100 is stable to SGD noise (barrier below {100 * STABLE_BELOW:.0f}%) from k = 0",
                        f"{stable} of {len(mine)} pairs stable",
                        holds(stable, len(mine)),
                    )
                )
        shows.append(text)
    return Reading(
        "The follow-up paper (Frankle et al. 2020) finds LeNet-300-100 on MNIST stable to SGD noise from "
        "initialisation (k = 0), dense and sparse, with matching tickets from rewinding to 0; larger networks "
        "become stable, and their tickets matching, only when rewound to an iteration a little way into training.",
        claims,
        " ".join(shows),
        _short_runs_text(f, [n for n in (LENET, "conv2") if f.has(n, "k = 0")], "k = 0")
        + " The two copies of each k are trained once and stored with the experiment; a redraw reads them.",
    )


def _deeper(f: Facts) -> Reading:
    claims, shows = [], []
    for network in DEEPER:
        if not f.has(network, "no warm-up"):
            continue
        name, text = NAMES[network], []
        gaps = [t["acc_mean"] - r["acc_mean"] for r in f.rows(network, "no warm-up", "reinit")
                if (t := f.row(network, "no warm-up", r["level"]))]  # fmt: skip
        if gaps:
            mean_gap = statistics.mean(gaps)
            claims.append(Claim(
                f"{name} at lr 0.1 without warm-up: tickets no better than randomly reinitialised",
                f"{points(mean_gap)} points on average over {len(gaps)} levels", no_difference(100 * mean_gap),
            ))  # fmt: skip
        for drawing, down_to, rule in (
            ("warm-up", WARMUP_TICKETS_DOWN_TO[network], "at least the dense network's accuracy"),
            ("late rewinding", None, "within 0.2 points of the dense network's accuracy or above"),
        ):
            if not f.has(network, drawing):
                continue
            dense = f.row(network, drawing, 0)
            levels = [r for r in f.rows(network, drawing)[1:] if down_to is None or r["percent"] >= down_to]
            slack = 0.0 if drawing == "warm-up" else MATCHING
            matched = sum(r["acc_mean"] >= dense["acc_mean"] - slack for r in levels)
            e = f.experiment(network, drawing)
            training = f"lr {e['lr']:g}" + (
                f", k = {e['rewind_iteration']:,}" if e["rewind_iteration"] else ""
            )
            where = f"down to {kept(down_to)}" if down_to else "at every level"
            claims.append(Claim(
                f"{name}, {drawing} ({'the paper' if drawing == 'warm-up' else 'Frankle et al. 2020'}): tickets "
                f"reach {rule} {where}",
                f"{matched} of {len(levels)} levels ({training})", holds(matched, len(levels)),
            ))  # fmt: skip
        for drawing in ("no warm-up", "warm-up", "late rewinding"):
            if f.has(network, drawing):
                dense, last = f.row(network, drawing, 0), f.rows(network, drawing)[-1]
                reinit = f.row(network, drawing, last["level"], "reinit")
                text.append(
                    f"{drawing}: dense {pct(dense['acc_mean'])}, tickets at {kept(last['percent'])} "
                    f"{pct(last['acc_mean'])}"
                    + (f" (reinitialised {pct(reinit['acc_mean'])})" if reinit else "")
                )
        shows.append(f"**{name}** ({_coverage(f, network, 'no warm-up')}): " + "; ".join(text) + ".")
    return Reading(
        "At the usual learning rate (SGD 0.1, momentum 0.9), iterative pruning finds no winning tickets for VGG-19 "
        'and the CIFAR ResNet (ResNet-20, the paper\'s "ResNet-18"): the pruned networks do no better than their '
        "masks randomly reinitialised. With linear learning-rate warm-up (VGG-19 at 0.1 over 10,000 iterations, "
        "ResNet at 0.03 over 20,000) winning tickets are found down to 1.5% (VGG-19) and 11.8% (ResNet) of the "
        "weights. The follow-up (Frankle et al. 2020) finds matching tickets at the usual rate by rewinding to an "
        "early iteration instead.",
        claims,
        " ".join(shows),
        _short_runs_text(f, [n for n in DEEPER if f.has(n, "no warm-up")], "no warm-up")
        + " Accuracy here is read at early stop (the minimum of validation loss), as in the rest of this "
        "project; the paper's Section 4 figures read it at fixed iterations (the figure's left panel shows the "
        "accuracy at the end of training).",
    )


READINGS: dict[str, Callable[[Facts], Reading]] = {
    "lenet_mnist": _lenet_mnist,
    "conv_cifar10": _conv_cifar10,
    "oneshot_vs_iterative": _oneshot_vs_iterative,
    "controls": _controls,
    "weight_travel": _weight_travel,
    "tickets": _tickets,
    "dropout": _dropout,
    "rewinding": _rewinding,
    "deeper": _deeper,
}


# The networks each reading describes by name; any other network a notebook was given
# (`-p networks ...`) gets `_any_network`'s lines.
DESCRIBED = {
    "conv_cifar10": CONV,
    "oneshot_vs_iterative": (LENET, "conv2"),
    "controls": (LENET, *CONV),
    "tickets": (LENET, "conv2"),
    "dropout": CONV,
    "rewinding": (LENET, "conv2"),
    "deeper": DEEPER,
}


def _any_network(f: Facts, network: str, drawing: str) -> str:
    """What any experiment shows: its dense network and its best and sparsest tickets."""
    dense, tickets = f.row(network, drawing, 0), f.rows(network, drawing)[1:]
    text = f"**{NAMES.get(network, network)}, {drawing}** ({_coverage(f, network, drawing)}): dense {pct(dense['acc_mean'])}"
    if tickets:
        best = max(tickets, key=lambda r: r["acc_mean"])
        text += (
            f"; its best ticket {pct(best['acc_mean'])} at {kept(best['percent'])}, its sparsest "
            f"{pct(tickets[-1]['acc_mean'])} at {kept(tickets[-1]['percent'])}"
        )
    return text + "."


def reading(found: Mapping) -> Reading:
    """The Reading of one notebook's facts."""
    f = Facts(found)
    parts = READINGS[found["notebook"]](f)
    described = DESCRIBED.get(found["notebook"])
    others = [e for e in found["experiments"] if described is not None and e["network"] not in described]
    if not others:
        return parts
    extra = " ".join(_any_network(f, e["network"], e["drawing"]) for e in others)
    return dataclasses.replace(parts, shows=f"{parts.shows} {extra}".strip())


def render(found: Mapping) -> str:
    """A notebook's Reading cell, as Markdown."""
    parts = reading(found)
    out = [f"**What the paper reports.** {parts.paper}", ""]
    if parts.claims:
        out += [_claims_table(parts.claims, found["scale"]), "", f"Verdicts: {RULE}", ""]
    out += [
        f"**What the `{found['scale']}` run shows.** {parts.shows}",
        "",
        f"**Where and why it differs.** {parts.differs}",
    ]
    return "\n".join(out)


def readme_section(notebook: str, root: Path | None = None) -> str:
    """A README figure section's reading: the paper's claims beside every committed scale's
    measurement, then what each scale shows."""
    found = {scale: f for scale in FACTS_DIRS if (f := committed_facts(notebook, scale, root)) is not None}
    parts = {scale: reading(f) for scale, f in found.items()}
    first = next(iter(parts.values()))
    out = [f"**Paper:** {first.paper}", ""]
    claims = list(dict.fromkeys(c.paper for p in parts.values() for c in p.claims))  # in order, once each
    if claims:
        out += [
            "| the paper | " + " | ".join(f"`{s}` scale" for s in parts) + " |",
            "| --- |" + " --- |" * len(parts),
        ]
        for claim in claims:
            measured = [{c.paper: c for c in p.claims}.get(claim) for p in parts.values()]
            cells = [f"{c.measured}: **{c.verdict}**" if c else "" for c in measured]
            out.append(f"| {claim} | " + " | ".join(cells) + " |")
        out.append("")
    out += [f"**`{scale}` scale.** {p.shows}\n" for scale, p in parts.items()]
    return "\n".join(out).rstrip()


def coverage_text(root: Path | None = None) -> str:
    """What the committed `paper` scale covers, from its facts: per network of the iterative
    notebooks, its rounds done, trials, controls, iterations and evaluation."""
    out = []
    for notebook in ("lenet_mnist", "conv_cifar10"):
        found = committed_facts(notebook, "paper", root)
        for e in found["experiments"] if found else []:
            done = e["levels_done"] - 1
            rounds = f"{e['rounds']} rounds" if done == e["rounds"] else f"{done} of {e['rounds']} rounds"
            controls = f"{e['control_trials']} reinitialisations and {e['control_trials']} random prunings per ticket"
            evaluation = (
                f"{e['eval_examples']:,}-example subsets"
                if e["eval_examples"]
                else "the full validation and test sets"
            )
            out.append(
                f"{NAMES[e['network']]}, {'complete' if done == e['rounds'] else 'in part'}: {rounds}, {e['trials']} trials, "
                f"{controls}, {e['iterations']:,} iterations each, {evaluation} every {e['eval_every']} iterations"
            )
    return "; ".join(out) + "." if out else "nothing yet."


def section4_cost_text() -> str:
    """What the `deeper` notebook's paper scale asks of a GPU, from the protocol alone: per
    network, the training steps of its experiments (the dense level once: late rewinding
    reuses the one trained without warm-up) and their model FLOPs (3 x the forward pass's
    multiply-adds x 2 per example, as `benchmarks/bench.py` counts them)."""
    from lth_lib.models import multiply_adds
    from lth_lib.notebook import NotebookParameters

    out = []
    for network, drawn in NotebookParameters("deeper", "paper").experiments().items():
        steps, dense = 0, set()
        for exp in drawn.values():
            t, p = exp.training, exp.pruning
            key = (t.lr, t.warmup)
            if key not in dense:
                dense.add(key)
                steps += exp.trials * t.iterations
            steps += p.rounds * exp.trials * (1 + len(exp.controls) * exp.control_trials) * (
                t.iterations - p.rewind_iteration)  # fmt: skip
        batch = next(iter(drawn.values())).training.batch_size
        flops = steps * batch * 6 * multiply_adds(network)
        out.append(
            f"{NAMES[network]}: {steps / 1e6:,.1f} million training steps of batch {batch}, "
            f"{flops / 1e18:,.1f} x 10^18 FLOPs"
        )
    return "; ".join(out) + "."


def cog_section(notebook: str) -> None:
    """Write `readme_section(notebook)` into a cog block (the README's generated readings);
    "coverage": `coverage_text()`; "rule": `RULE`; "section4-cost": `section4_cost_text()`."""
    import cog

    special = {
        "coverage": coverage_text,
        "rule": lambda: f"Verdicts: {RULE}",
        "section4-cost": section4_cost_text,
    }
    cog.outl(special[notebook]() if notebook in special else readme_section(notebook))


def refresh_readme(root: Path | None = None) -> None:
    """Regenerate the README's cog blocks from the committed facts."""
    from cogapp import Cog

    readme = (root or PROJECT or Path.cwd()) / "README.md"
    if Cog().main(["cog", "-r", "--verbosity=0", str(readme)]) != 0:
        raise RuntimeError(f"cog failed on {readme}")


if __name__ == "__main__":
    refresh_readme()
