"""The readings: every number of a kept notebook's Reading and of the README's figure
sections is what `lth_lib.readings` renders from the committed facts, and the `paper`
facts are what the committed paper-scale results give."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from cogapp import Cog

from lth_lib import readings
from lth_lib.notebook import COMMITTED_FIGURES, NOTEBOOKS, NotebookParameters
from lth_lib.paths import PROJECT
from lth_lib.regenerate import drawable

KEPT = {scale: PROJECT / folder / "notebooks" for scale, folder in COMMITTED_FIGURES.items()}


def reading_output(path: Path) -> str:
    """The Markdown a kept notebook's `params.reading()` cell shows."""
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() == "params.reading()"]
    (output,) = [o for o in cell.outputs if "text/markdown" in o.get("data", {})]
    return output.data["text/markdown"]


def stale_readings(kept: dict[str, Path], root: Path) -> list[str]:
    """The kept notebooks whose Reading is not what the committed facts under `root` render."""
    stale = []
    for scale, folder in kept.items():
        for path in sorted(folder.glob("*.ipynb")):
            found = readings.committed_facts(path.stem, scale, root)
            if found is None or reading_output(path) != readings.render(found):
                stale.append(f"{scale}/{path.name}")
    return stale


def cog_check(readme: Path) -> int:
    """cog --check on `readme`: 0 when its generated blocks are what the facts give."""
    return Cog().main(["cog", "--check", "--verbosity=0", str(readme)])


def test_every_kept_notebook_has_facts_and_a_matching_reading():
    for scale, folder in KEPT.items():
        kept = {p.stem for p in folder.glob("*.ipynb")}
        facts = {p.stem for p in (PROJECT / readings.FACTS_DIRS[scale]).glob("*.json")}
        assert kept == facts, f"{scale}: kept notebooks {sorted(kept)}, facts {sorted(facts)}"
        assert kept, f"no kept {scale} notebooks"
    assert stale_readings(KEPT, PROJECT) == []


def test_an_edited_number_in_a_reading_fails(tmp_path):
    kept = tmp_path / "notebooks"
    shutil.copytree(KEPT["paper"], kept)
    path = kept / "lenet_mnist.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.source.strip() == "params.reading()")
    output = next(o for o in cell.outputs if "text/markdown" in o.get("data", {}))
    text = output.data["text/markdown"]
    assert "97.98%" in text  # the dense network's accuracy at paper scale
    output.data["text/markdown"] = text.replace("97.98%", "97.99%", 1)
    nbformat.write(nb, path)
    assert stale_readings({"paper": kept}, PROJECT) == ["paper/lenet_mnist.ipynb"]


def test_readme_blocks_are_generated_and_an_edit_fails(tmp_path):
    readme = PROJECT / "README.md"
    assert cog_check(readme) == 0, "README.md differs from its facts: run python -m lth_lib.readings"
    text = readme.read_text()
    blocks = re.findall(r"\[\[\[cog .*?\]\]\] -->\n(.*?)<!-- \[\[\[end\]\]\]", text, flags=re.DOTALL)
    assert len(blocks) >= len(NOTEBOOKS), "a README figure section lost its generated block"
    edited = tmp_path / "README.md"
    first = next(b for b in blocks if "**`paper` scale.**" in b)  # the LeNet section
    number = re.search(r"\d+\.\d\d%", first).group()
    wrong = f"{float(number[:-1]) + 0.01:.2f}%"
    edited.write_text(text.replace(first, first.replace(number, wrong, 1), 1))
    assert cog_check(edited) != 0


def test_the_paper_facts_are_what_the_committed_results_give():
    """Recomputed from figures/data/paper/ (what the paper-scale notebooks drew), each
    notebook's facts render to exactly its committed Reading."""
    plan = drawable(list(NOTEBOOKS), "paper")
    assert set(plan) == {p.stem for p in (PROJECT / readings.FACTS_DIRS["paper"]).glob("*.json")}
    for notebook, networks in plan.items():
        params = NotebookParameters.of(
            {"scale": "paper", "train": False, "networks": ",".join(networks)}, notebook
        )
        recomputed = readings.notebook_facts(params)
        committed = readings.committed_facts(notebook, "paper")
        assert readings.render(recomputed) == readings.render(committed), notebook
        assert json.loads(json.dumps(recomputed)).keys() == committed.keys()


@pytest.mark.parametrize(
    ("rule", "value", "verdict"),
    [
        (lambda m: readings.effect(m, 0.3), 0.32, "reproduced"),
        (lambda m: readings.effect(m, 0.3), 0.15, "reproduced"),
        (lambda m: readings.effect(m, 0.3), 0.1, "close"),
        (lambda m: readings.effect(m, 0.3), -0.1, "not"),
        (readings.no_difference, -0.07, "reproduced"),
        (readings.no_difference, 0.8, "close"),
        (readings.no_difference, -1.5, "not"),
    ],
)
def test_the_verdict_rule(rule, value, verdict):
    assert rule(value) == verdict


def test_the_verdict_rule_over_levels():
    assert readings.holds(5, 5) == "reproduced"
    assert readings.holds(3, 5) == "close"
    assert readings.holds(2, 4) == "not"
    assert readings.holds(0, 0) == readings.NOT_COVERED


def test_the_facts_are_of_the_experiments_the_notebooks_draw_today():
    """Each committed facts file describes the experiments its notebook draws at its scale
    now: a change to a scale's protocol without a new run fails here."""
    for scale in readings.FACTS_DIRS:
        for path in sorted((PROJECT / readings.FACTS_DIRS[scale]).glob("*.json")):
            found = json.loads(path.read_text())
            networks = ",".join(dict.fromkeys(e["network"] for e in found["experiments"]))
            drawn = NotebookParameters.of({"scale": scale, "networks": networks}, path.stem).experiments()
            for e in found["experiments"]:
                exp = drawn[e["network"]][e["drawing"]]
                described = (
                    exp.training.iterations,
                    exp.pruning.rounds,
                    exp.trials,
                    exp.training.eval_examples,
                )
                assert (e["iterations"], e["rounds"], e["trials"], e["eval_examples"]) == described, (path, e)


def test_kept_notebooks_link_figures_that_exist():
    for folder in KEPT.values():
        for path in sorted(folder.glob("*.ipynb")):
            text = path.read_text()
            links = re.findall(r"\]\(\.\./([^)]+\.png)\)", text)
            assert links, f"{path} links no figure"
            assert all((folder.parent / link).exists() for link in links), path
            assert '"image/png"' not in text, f"{path} embeds an image"
