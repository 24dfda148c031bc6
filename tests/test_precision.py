"""How networks train and are evaluated on a GPU: the precision, where test metrics are
computed; chosen by device and protocol, applied, and recorded."""

import math

import pytest
import torch

from lth_lib.data import Dataset
from lth_lib.lottery import run
from lth_lib.plots import paper_figure, scale_caption
from lth_lib.precision import agree, side_by_side
from lth_lib.protocol import PRECISIONS, evaluation_grid, paper_experiment, training_precision
from lth_lib.store import load_level, sync
from lth_lib.train import kernels, train
from tests.test_train import FAST, member


@pytest.fixture(scope="module")
def cifar() -> Dataset:
    """CIFAR-shaped random data, just over the 5,000 validation examples, under the name of
    a copy of CIFAR-10 (the portable store files experiments by the copies it knows)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(5160, 3, 32, 32, generator=g), torch.randint(0, 10, (5160,), generator=g)
    return Dataset("cifar10", "cifar10-jpeg-imagefolder", x[:5100], y[:5100], x[5100:], y[5100:])


def test_a_cpu_trains_in_float32_and_a_gpu_as_the_network_protocol_says():
    assert training_precision("conv2", "cpu") == training_precision("lenet300", "cpu") == "float32"
    assert training_precision("conv2", "cuda") == training_precision("conv6", "cuda") == "tf32"
    assert training_precision("lenet300", "cuda") == training_precision("resnet20", "cuda") == "float32"
    assert training_precision("conv2", "cuda", "float32") == "float32"  # asked for: strict float32 on a GPU
    assert training_precision("lenet300", "cpu", "bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        training_precision("conv2", "cpu", "fp8")


def test_kernels_apply_each_precision_and_restore_the_settings():
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.rand(2, 3, 8, 8)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    seen = {}
    for precision in PRECISIONS:
        with kernels(precision, "cpu"):
            seen[precision] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                               torch.backends.cudnn.deterministic, conv(x).dtype)  # fmt: skip
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert seen == {
        "float32": (False, False, True, torch.float32),
        "tf32": (True, True, True, torch.float32),
        "bf16": (False, False, True, torch.bfloat16),
    }
    with pytest.raises(ValueError, match="unknown precision"), kernels("half"):
        pass


def test_bf16_changes_the_numbers_and_tf32_on_a_cpu_does_not(synthetic):
    start = [member(0), member(1)]
    runs = {p: train("lenet300", start, synthetic, FAST, precision=p) for p in PRECISIONS}
    for a, b in zip(runs["float32"], runs["tf32"]):  # a CPU has no TF32: the same arithmetic
        assert a.curve == b.curve
        assert all(torch.equal(a.final_weights[k], b.final_weights[k]) for k in a.final_weights)
    assert runs["bf16"][0].curve["val_loss"] != runs["float32"][0].curve["val_loss"]
    # close, though: bf16 products with float32 weights and optimiser
    assert abs(runs["bf16"][0].curve["val_acc"][-1] - runs["float32"][0].curve["val_acc"][-1]) < 0.1


def test_each_level_records_its_precision_and_the_caption_names_a_deviation(cifar, tmp_path):
    exp = paper_experiment("conv2", iterations=2, eval_every=2, eval_examples=60, rounds=1, trials=1,
                           control_trials=1)  # fmt: skip
    default = run(exp, cifar, results_root=tmp_path / "float32", progress=False, device="cpu")
    assert default.precision == "float32" and "precision" not in scale_caption(
        exp, precision=default.precision
    )
    results = run(exp, cifar, results_root=tmp_path / "bf16", progress=False, device="cpu", precision="bf16")
    assert [load_level(results.directory, level).trained["precision"] for level in (0, 1)] == ["bf16", "bf16"]
    assert results.precision == "bf16"
    assert scale_caption(exp, precision=results.precision).endswith("precision bf16")
    # read back without training: the store says what they trained in
    again = run(exp, cifar, results_root=tmp_path / "bf16", progress=False, training=False)
    assert again.precision == "bf16" and again.records == results.records
    assert default.records != results.records


def test_an_unknown_precision_is_refused_before_anything_is_written(cifar, tmp_path):
    exp = paper_experiment("conv2", iterations=2, eval_every=2, eval_examples=60, rounds=1, trials=1)
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        run(exp, cifar, results_root=tmp_path, progress=False, precision="float16")
    assert not any(tmp_path.iterdir())


def test_two_precisions_agree_when_each_mean_lies_within_the_other_s_range():
    float32 = {"early_stop_iteration": [4000, 5000, 6000], "early_stop_test_acc": [0.66, 0.68, 0.70]}
    close = {"early_stop_iteration": [4500, 5200, 5600], "early_stop_test_acc": [0.67, 0.69, 0.70]}
    late = {**close, "early_stop_iteration": [6500, 7000, 7400]}
    assert agree(close, float32) and agree(float32, close)
    assert not agree(late, float32)


def test_the_side_by_side_trains_the_stored_dense_level_again_and_tf32_on_a_cpu_agrees_exactly(
    cifar, tmp_path
):
    exp = paper_experiment("conv2", iterations=4, eval_every=2, eval_examples=60, rounds=1, trials=2)
    results = run(exp, cifar, results_root=tmp_path / "results", progress=False, device="cpu")
    sync(results.directory, tmp_path / "store")
    table, agreed = side_by_side("conv2", "tf32", cifar, tmp_path / "store", [exp])
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith(("| 0 ", "| 1 "))]
    stored = sorted((r for r in results.records if r.level == 0), key=lambda r: r.trial)
    assert [row[1] for row in rows] == [f"{r.early_stop_iteration:,}" for r in stored]
    assert all(row[1] == row[2] and row[3] == row[4].rstrip(" |") for row in rows)  # the same arithmetic
    assert agreed and "Verdict: they agree" in table
    with pytest.raises(LookupError, match="holds no level 0 of conv4"):
        side_by_side("conv4", "tf32", cifar, tmp_path / "store", [exp])


def test_a_gpu_computes_conv_test_metrics_on_a_grid_and_new_minima_and_a_cpu_everywhere():
    assert evaluation_grid("conv2", "cuda") == evaluation_grid("conv6", "cuda") == 1000
    assert (
        evaluation_grid("conv2", "cpu") is evaluation_grid("lenet300", "cuda") is None
    )  # None: every evaluation point
    assert evaluation_grid("lenet300", "cpu", 500) == 500
    with pytest.raises(ValueError, match="test_every must be positive"):
        evaluation_grid("conv2", "cuda", 0)


def test_a_level_with_test_metrics_at_fewer_points_is_stored_recorded_and_read_back_whole(
    synthetic, tmp_path
):
    exp = paper_experiment("lenet300", iterations=60, eval_every=10, eval_examples=200, rounds=1, trials=1,
                           control_trials=1)  # fmt: skip
    results = run(exp, synthetic, results_root=tmp_path / "results", progress=False, test_every=30)
    assert load_level(results.directory, 1).trained["test_every"] == 30
    assert any(math.isnan(v) for r in results.records for v in r.curve["test_acc"])
    written = sync(results.directory, tmp_path / "portable")
    back = run(exp, synthetic, portable=tmp_path / "portable", results_root=tmp_path / "none", progress=False,
               training=False)  # fmt: skip
    assert back.records == results.records  # NaN (not computed) reads back as NaN, and equals it
    assert len(written) == 2
    paper_figure(back)  # the test curves drawn from the points computed
