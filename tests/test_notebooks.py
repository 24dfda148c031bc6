"""The notebooks: parameters cells, parameter validation, clean metadata, and nbval biting."""

import ast
import base64
import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_runs import nbval_started

from lth_lib.lottery import run
from lth_lib.notebook import NOTEBOOKS, SAVED_AS, NotebookParameters, notebook_parameters, parameter_names
from lth_lib.regenerate import (
    NOTEBOOK_DIR,
    clean_notebook,
    drawn_experiments,
    keep_notebook,
    main,
    main_job,
    notebook_names,
)

PROJECT = NOTEBOOK_DIR.parent
FIELDS = set(parameter_names())


@pytest.fixture(params=notebook_names())
def notebook(request) -> tuple[str, nbformat.NotebookNode]:
    return request.param, nbformat.read(NOTEBOOK_DIR / f"{request.param}.ipynb", as_version=4)


def test_every_experiment_notebook_is_there():
    assert notebook_names() == [
        "lenet_mnist", "conv_cifar10", "oneshot_vs_iterative", "controls", "weight_travel", "tickets", "dropout",
        "rewinding", "deeper",
    ]  # fmt: skip
    assert main_job() == notebook_names()[:-1]  # deeper runs when named


def test_each_notebook_has_one_parameters_cell_starting_with_the_scale(notebook):
    name, nb = notebook
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, name
    assigned = [t.id for node in ast.parse(tagged[0].source).body for t in node.targets]
    assert assigned[0] == "scale"
    assert set(assigned) <= FIELDS, f"{name} declares parameters no notebook takes"


def test_each_notebook_guards_outputs_and_ends_with_a_reading(notebook):
    name, nb = notebook
    checked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs for c in checked), f"{name}: guarded cells need stored outputs"
    assert nb.cells[-2].cell_type == "markdown" and nb.cells[-2].source.startswith("## Reading")
    assert nb.cells[-1].cell_type == "code" and nb.cells[-1].source == "params.reading()"


def test_notebooks_are_stored_clean(notebook):
    name, nb = notebook
    assert clean_notebook(copy.deepcopy(nb)) == nb, f"{name}: run python -m lth_lib.regenerate --refresh"
    outputs = nbformat.writes(nb)
    for machine_path in ("/home/", "/root/", "/tmp/", "/work/", "/Users/"):
        assert machine_path not in outputs, f"{name} stores a machine path"
    for cell in nb.cells:
        if cell.cell_type == "code":
            for output in cell.outputs:
                assert output.get("name") != "stderr", f"{name}: stored stderr (a warning or a progress bar)"


def test_each_notebook_says_where_its_executed_copy_is_and_that_copy_is_committed(notebook):
    name, nb = notebook
    kept = f"figures/notebooks/{name}.ipynb"
    assert kept in nb.cells[0].source, f"{name}: its first cell should name {kept}"
    executed = nbformat.read(PROJECT / kept, as_version=4)
    assert [c.source for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])] == [
        c.source for c in nb.cells
    ], f"{kept} was not executed from the current notebook: run python -m lth_lib.regenerate"
    assert 'scale = "cpu"' in next(
        c.source for c in executed.cells if "injected-parameters" in c.metadata.tags
    )
    assert all(
        c.outputs for c in executed.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source
    )
    text = nbformat.writes(executed)
    assert not any(
        machine_path in text for machine_path in ("/home/", "/root/", "/tmp/", "/work/", "/Users/")
    )
    assert "papermill" not in executed.metadata and "\r" not in text


def test_a_kept_notebook_has_no_paths_timings_or_progress_redraws(tmp_path):
    from lth_lib.regenerate import keep_notebook

    project = PROJECT
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"input_path": f"{project}/notebooks/x.ipynb"}})
    cell = nbformat.v4.new_code_cell(
        f'figures_dir = "{project}/figures"',
        metadata={"execution": {"iopub.execute_input": "2026-11-28T00:52:30Z"}},
    )
    bar = "lenet300: 10%|#  | 1/10 [00:01<00:09, 1.0it/s]\rlenet300: 100%|###| 10/10 [00:10<00:00, 1.0it/s, acc=0.9]"
    cell.outputs = [  # papermill keeps each redraw of a bar as its own output
        nbformat.v4.new_output("stream", name="stdout", text=bar),
        nbformat.v4.new_output(
            "stream", name="stdout", text="\rlenet300: 100%|###| 10/10 [00:10<00:00, 1.0it/s]"
        ),
        nbformat.v4.new_output("stream", name="stdout", text=f"\nsaved to {project}/figures/a.png\n"),
    ]
    nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "executed.ipynb")
    keep_notebook(tmp_path / "executed.ipynb", tmp_path / "kept" / "x.ipynb")
    kept = nbformat.read(tmp_path / "kept" / "x.ipynb", as_version=4)
    assert "papermill" not in kept.metadata and "execution" not in kept.cells[0].metadata
    assert kept.cells[0].source == 'figures_dir = "figures"'
    assert [o.text for o in kept.cells[0].outputs] == ["lenet300: 100%|###| 10/10\nsaved to figures/a.png\n"]


def _executed(tmp_path: Path, injected_id: str) -> Path:
    """A notebook as papermill leaves it: a random id on its injected-parameters cell, run
    times, and a cell that showed two saved figures (tagged by `NotebookParameters.save`) and
    an image it did not save."""
    times = {"start_time": f"2026-01-0{injected_id[-1]}T12:00:00", "duration": 1.0}
    nb = nbformat.v4.new_notebook(metadata={"papermill": times})
    nb.cells = [
        nbformat.v4.new_code_cell(
            'scale = None\nnetworks = ""', metadata={"tags": ["parameters"]}, id="params"
        ),
        nbformat.v4.new_code_cell(
            'scale = "cpu"\n', metadata={"tags": ["injected-parameters"]}, id=injected_id
        ),
        nbformat.v4.new_code_cell('params.save(figure, "lenet300-iterative")\ndisplay(photo)', id="draw"),
    ]
    figure = {
        "image/png": base64.b64encode(b"figure").decode(),
        "text/plain": "<Figure size 1500x480 with 3 Axes>",
    }
    nb.cells[2].outputs = [
        nbformat.v4.new_output("display_data", data=figure, metadata={SAVED_AS: "lenet300-iterative.png"}),
        nbformat.v4.new_output("display_data", data={"image/png": "cGhvdG8="}),
    ]
    for count, cell in enumerate(nb.cells, 1):
        cell.execution_count = count
        cell.metadata["papermill"] = times
    nbformat.write(nb, tmp_path / f"{injected_id}.ipynb")
    return tmp_path / f"{injected_id}.ipynb"


def test_two_keeps_of_the_same_outputs_are_byte_identical(tmp_path):
    kept, written = tmp_path / "figures" / "notebooks" / "x.ipynb", []
    for injected_id in ("a1b2c3d1", "f9e8d7c2"):
        keep_notebook(_executed(tmp_path, injected_id), kept)
        written.append(kept.read_bytes())
    assert written[0] == written[1]
    assert nbformat.reads(written[0], as_version=4).cells[1].id == "injected-parameters"


def test_a_kept_notebook_links_the_figures_its_run_saved_and_embeds_other_images(tmp_path):
    kept = tmp_path / "figures" / "notebooks" / "x.ipynb"
    keep_notebook(_executed(tmp_path, "a1b2c3d1"), kept)
    linked, other = nbformat.read(kept, as_version=4).cells[2].outputs
    assert linked.data == {
        "text/markdown": "![lenet300-iterative](../lenet300-iterative.png)",
        "text/plain": "<Figure size 1500x480 with 3 Axes>",
    }
    assert linked.metadata == {}
    assert other.data == {"image/png": "cGhvdG8="}


def test_a_saved_figure_is_shown_once_tagged_with_its_file(tmp_path, monkeypatch):
    """In a kernel, `save` shows the figure itself, tagged, and closes it so the cell's end
    does not show it again; the tag names the file it wrote."""
    from IPython.testing.globalipapp import get_ipython
    from matplotlib.figure import Figure

    from lth_lib.notebook import NotebookParameters

    shell = get_ipython()
    shown = []
    monkeypatch.setattr(
        shell.display_pub, "publish", lambda data, metadata=None, **kwargs: shown.append(metadata)
    )
    figure = Figure()
    figure.subplots().plot([0, 1])
    NotebookParameters(scale="smoke", figures_dir=str(tmp_path)).save(figure, "line")
    assert shown == [{SAVED_AS: "line.png"}]
    assert (tmp_path / "line.png").exists() and (tmp_path / "line.svg").exists()


def test_notebook_parameters_reject_misspelt_names_and_bad_values():
    namespace = {"scale": "smoke", "trails": 3, "os": os, "_hidden": 1, "In": []}
    with pytest.raises(
        ValueError, match=r"unknown notebook parameter\(s\) 'trails'; parameters are: .*trials"
    ):
        notebook_parameters(namespace)
    with pytest.raises(ValueError, match="unknown scale 'huge'; choose one of: smoke, cpu, paper"):
        notebook_parameters({"scale": "huge"})
    with pytest.raises(ValueError, match="unknown network 'conv8'"):
        notebook_parameters({"scale": "cpu", "networks": "conv2,conv8"})
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        notebook_parameters({"scale": "cpu", "rounds": 0})
    with pytest.raises(ValueError, match="conv_rate must be in"):
        notebook_parameters({"scale": "cpu", "conv_rate": 1.5})
    with pytest.raises(TypeError, match="trials must be int, got '3'"):
        notebook_parameters({"scale": "cpu", "trials": "3"})
    with pytest.raises(
        ValueError, match="'strategy' is not a notebook parameter: oneshot_vs_iterative draws both"
    ):
        notebook_parameters({"scale": "cpu", "strategy": "oneshot"})
    params = notebook_parameters({"scale": "smoke", "networks": "conv2, conv4", "trials": 2})
    assert params.network_list == ["conv2", "conv4"]
    assert params.experiment("conv2").trials == 2


def test_any_protocol_field_is_a_notebook_parameter_for_the_experiments_it_applies_to():
    params = notebook_parameters(
        {"scale": "smoke", "conv_rate": 0.2, "lr": 1e-3, "iterations": None}, "controls"
    )
    drawn = params.experiments("iterative")
    assert list(drawn) == list(NOTEBOOKS["controls"].networks) == ["lenet300", "conv2"]
    assert drawn["conv2"].pruning.conv_rate == 0.2 and drawn["conv2"].training.lr == 1e-3
    assert drawn["lenet300"].training.lr == 1e-3  # conv_rate applies only where there are conv layers
    assert drawn["conv2"].training.iterations == 4  # None: the scale's
    assert set(FIELDS) >= {
        "conv_rate",
        "fc_rate",
        "lr",
        "batch_size",
        "eval_every",
        "scope",
        "control_trials",
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--scale", "huge"], "unknown scale 'huge'"),
        (["lenet", "--scale", "smoke"], "unknown notebook(s) lenet; notebooks: lenet_mnist"),
        (
            ["--scale", "smoke", "-p", "trails", "3"],
            "unknown notebook parameter(s) 'trails'; parameters are:",
        ),
        (["--scale", "smoke", "-p", "networks", "vgg"], "unknown network 'vgg'"),
        (["--scale", "smoke", "--jobs", "2"], "need --executor"),
        (["--scale", "smoke", "--executor", "local", "--no-wait"], "--no-wait needs --executor slurm"),
        (["--scale", "smoke", "--executor", "local", "--jobs", "0"], "jobs must be at least 1"),
        (["--scale", "smoke", "--executor", "local", "--partition", "gpu"], "a partition is a SLURM option"),
        (["--scale", "smoke", "--executor", "local", "--collect", "x"], "give it without --executor"),
    ],
)
def test_regenerate_refuses_bad_requests_before_running_anything(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_papermill_with_a_misspelt_parameter_fails_at_once(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown notebook parameter\(s\) 'trails'"):
        papermill.execute_notebook(
            NOTEBOOK_DIR / "weight_travel.ipynb",
            tmp_path / "out.ipynb",
            parameters={"scale": "smoke", "trails": 3, "results_root": str(tmp_path)},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(NOTEBOOK_DIR),
        )


def _nbval(
    path: Path, results: Path, ignore: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess:
    """nbval over `path` (a notebook or a folder of them, less the notebooks `ignore`
    names) at smoke scale, in `path`'s folder."""
    process = nbval_started([path], results, ignore, **env)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_checked_outputs_hold_when_float_rounding_changes(local_data, float_rounding_rerun, tmp_path):
    pytest.importorskip("nbval")
    # the main job's notebooks as another machine rounds floats, started beside the rest of
    # the suite (`conftest.float_rounding_rerun`)
    folder, started = float_rounding_rerun
    for half, process, log in started:
        process.wait()
        said = log.read_text()
        assert process.returncode == 0, said[-3000:]
        cells = sum(
            c.cell_type == "code" for n in half for c in nbformat.read(NOTEBOOK_DIR / f"{n}.ipynb", 4).cells
        )
        assert f"{cells} passed" in said  # every cell of every notebook ran
    # the emulation did change the numbers: Conv-2's stored metrics differ from this machine's
    [conv2] = [
        e for e in drawn_experiments(NotebookParameters("conv_cifar10", "smoke")) if e.network == "conv2"
    ]
    this = run(conv2, data_root=local_data, results_root=tmp_path / "this", progress=False).directory
    other = folder / "other" / this.name / "records.csv"
    assert (this / "records.csv").read_bytes() != other.read_bytes(), (
        "oneDNN off and another thread count left Conv-2's metrics unchanged"
    )


def test_nbval_fails_when_a_result_bearing_value_changes_and_passes_when_restored(tmp_path):
    pytest.importorskip("nbval")
    original = nbformat.read(NOTEBOOK_DIR / "lenet_mnist.ipynb", as_version=4)
    target = 'params.experiments("iterative")["lenet300"]'
    [cell] = [c for c in original.cells if target in c.source]
    changed = copy.deepcopy(original)
    changed.cells[original.cells.index(cell)].source = cell.source.replace(
        target, 'params.experiment("lenet300", controls=("reinit", "random_prune"), fc_rate=0.25)'
    )
    copy_path = tmp_path / "lenet_mnist.ipynb"
    nbformat.write(changed, copy_path)
    bitten = _nbval(copy_path, tmp_path / "results-changed")
    assert bitten.returncode != 0, bitten.stdout[-2000:]
    assert "fc1 0.25" in bitten.stdout  # the guarded schedule shows the changed rate
    nbformat.write(original, copy_path)
    restored = _nbval(copy_path, tmp_path / "results-restored")
    assert restored.returncode == 0, restored.stdout[-3000:]


def test_only_a_full_regeneration_rewrites_the_timings(tmp_path, monkeypatch, capsys):
    from lth_lib import regenerate

    ran = lambda names, *args: [regenerate.Outcome(name, 1.0) for name in names]
    monkeypatch.setattr(regenerate, "regenerate", ran)
    common = ["--scale", "smoke", "--figures", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(["controls", *common]) == 0
    assert not (tmp_path / "timings-smoke.md").exists()
    assert "a subset: timings-smoke.md left as it was" in capsys.readouterr().out
    assert main(common) == 0  # a redraw: nothing trained
    assert not (tmp_path / "timings-smoke.md").exists()
    assert "nothing trained: timings-smoke.md left as it was" in capsys.readouterr().out
    stores = itertools.cycle([set(), {tmp_path / "level_000.json"}])  # before and after: a level was trained
    monkeypatch.setattr(regenerate, "stored_files", lambda parameters: next(stores))
    assert main(common) == 0
    rows = (tmp_path / "timings-smoke.md").read_text()
    assert all(f"| {name} | 0m01s | ok |" in rows for name in main_job()) and "deeper" not in rows
    assert main(["deeper", *common]) == 0  # a notebook outside the main job: timings of its own
    assert "| deeper | 0m01s | ok |" in (tmp_path / "timings-smoke-deeper.md").read_text()


@pytest.mark.parametrize(
    "argv,folder",
    [
        ([], "figures"),  # no GPU here: cpu, the committed scale
        (["--scale", "cpu"], "figures"),
        (["--scale", "smoke"], "out/smoke/figures"),
        (["--scale", "cpu", "-p", "trials", "3"], "out/cpu-trials-3/figures"),
        (["controls", "--scale", "cpu"], "out/cpu/figures"),  # a subset
        (["--scale", "smoke", "--figures", "{tmp}"], "{tmp}"),
    ],
)
def test_only_a_full_regeneration_at_the_committed_scale_writes_into_figures(
    argv, folder, tmp_path, monkeypatch, capsys
):
    from lth_lib import regenerate

    argv, folder = [a.format(tmp=tmp_path) for a in argv], folder.format(tmp=tmp_path)
    if not argv and regenerate.default_scale() != "cpu":
        pytest.skip(
            f"the default scale here is {regenerate.default_scale()!r}, not cpu (a GPU, or LTH_SCALE)"
        )
    seen = []
    monkeypatch.setattr(
        regenerate, "regenerate", lambda names, scale, params, out, figures: seen.append(figures) or []
    )
    monkeypatch.setattr(regenerate, "write_timings", lambda outcomes, scale, figures: figures / "timings.md")
    monkeypatch.setattr(Path, "mkdir", lambda *args, **kwargs: None)  # leave the project as it is
    assert main(argv) == 0
    assert seen == [(PROJECT / folder).resolve()]
    assert f"figures go to {seen[0]}" in capsys.readouterr().out


def test_each_notebook_draws_what_the_registry_says(notebook):
    name, nb = notebook
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'lth.notebook_parameters(globals(), "{name}")' in code, name  # its defaults come from NOTEBOOKS
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defaults = {t.id: node.value for node in ast.parse(cell.source).body for t in node.targets}
    assert "networks" not in defaults or ast.literal_eval(defaults["networks"]) == "", name
    assert "params.iterative(" not in code and "params.oneshot(" not in code, name


def _papermill(notebook: str, out: Path, *parameters: str, **env: str) -> subprocess.CompletedProcess:
    """papermill's command line on `notebook` at smoke scale, as a user types it."""
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(out), "-p", "scale",
               "smoke", *parameters, "--cwd", str(NOTEBOOK_DIR), "-k", "python3"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)


def test_any_protocol_field_is_a_papermill_parameter_and_a_misspelt_one_is_refused(tmp_path):
    pytest.importorskip("papermill")
    results = {"LTH_RESULTS": str(tmp_path / "results")}
    done = _papermill(
        "conv_cifar10", tmp_path / "out.ipynb", "-p", "conv_rate", "0.2", "-p", "networks", "conv2", **results
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = nbformat.writes(nbformat.read(tmp_path / "out.ipynb", as_version=4))
    assert "rates per round: conv1 0.2, conv2 0.2, fc1 0.2, fc2 0.2, fc3 0.1" in printed
    refused = _papermill("conv_cifar10", tmp_path / "bad.ipynb", "-p", "conv_rat", "0.2", **results)
    assert (
        refused.returncode != 0
        and "unknown notebook parameter(s) 'conv_rat'" in refused.stderr + refused.stdout
    )


# An IPython start-up file that registers a network of one's own in every kernel.
TOY_NETWORK = """
import lth_lib as lth
lth.NETWORKS["toy"] = lth.NetworkProtocol(
    architecture=lth.Architecture(dataset="mnist", input_shape=(784,), layers=(lth.Dense(64), lth.Dense(10))),
    iterations=1000, lr=1e-3,
    scales={"smoke": dict(iterations=30, eval_every=10, eval_examples=200, rounds=2, trials=1, control_trials=1)},
)
"""


def test_a_network_registered_in_the_kernel_is_drawn_by_a_notebook(tmp_path):
    pytest.importorskip("papermill")
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-toy.py").write_text(TOY_NETWORK)
    done = _papermill("tickets", tmp_path / "out.ipynb", "-p", "networks", "toy", IPYTHONDIR=str(tmp_path / "ipython"),
                      LTH_RESULTS=str(tmp_path / "results"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = nbformat.writes(nbformat.read(tmp_path / "out.ipynb", as_version=4))
    assert "toy · iterative · 30 iterations · 2 rounds" in printed  # its caption
    assert "(0): Linear(in_features=784, out_features=64, bias=True)" in printed  # its exported ticket
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "results").iterdir()) == ["dense", "toy"]
