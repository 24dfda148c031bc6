"""Progress bars: one per experiment, plain text on stdout outside JupyterLab."""

import pytest

from lth_lib.lottery import run
from lth_lib.progress import TrainingBar, widgets_wanted
from lth_lib.protocol import paper_experiment


def test_widgets_only_in_a_jupyter_servers_kernel_with_ipywidgets(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not widgets_wanted()  # papermill, nbval, a terminal
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/lenet_mnist.ipynb")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert not widgets_wanted()  # JupyterLab without ipywidgets: text, not tqdm's IProgress warning


def test_one_text_bar_per_experiment_on_stdout_naming_the_level(synthetic, capsys, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.setenv("COLUMNS", "160")  # wide enough for the whole bar, on any terminal or none
    exp = paper_experiment(
        "lenet300", iterations=20, eval_every=10, eval_examples=100, rounds=2, controls=("reinit",)
    )
    run(exp, synthetic, results_store=False, progress=True, max_members=2)
    out, err = capsys.readouterr()
    assert err == ""
    last = out.replace("\r", "\n").strip().splitlines()[-1]
    # levels 0, 1 and 2: 20 iterations each; levels 1 and 2 train 2 networks in one chunk
    assert last.startswith("lenet300 iterative · level 2/2 (2 nets): 100%")
    assert "60/60" in last and "test_acc=" in last


def test_a_job_in_chunks_counts_each_chunk(capsys, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    bar = TrainingBar("conv2 iterative", total=2 * 100)
    progress = bar.job("level 1/3 (2 nets)", first=0)
    for chunk in range(2):
        for iteration in range(0, 101, 50):
            progress(iteration, {"test_acc": [0.5]})
    assert bar.tqdm.n == 200
    bar.close()
    assert "200/200" in capsys.readouterr().out.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.parametrize("stored", [True, False])
def test_no_bar_when_everything_comes_from_the_store(synthetic, tmp_path, capsys, stored):
    exp = paper_experiment("lenet300", iterations=20, eval_every=10, eval_examples=100, rounds=1)
    run(exp, synthetic, results_root=tmp_path, progress=False)
    capsys.readouterr()
    if not stored:
        for level in tmp_path.glob("*/trial_*/level_001.json"):
            level.unlink()
    run(exp, synthetic, results_root=tmp_path, progress=True)
    out = capsys.readouterr().out
    assert (out == "") == stored
    if not stored:  # only the missing level is trained and counted
        assert "20/20" in out.replace("\r", "\n").strip().splitlines()[-1]
