"""Weight travel and the per-level summaries the notebooks print."""

import pytest
import torch

from lth_lib.lottery import run
from lth_lib.protocol import paper_experiment
from lth_lib.results import control_gaps, summary_text
from lth_lib.travel import travel_summary, weight_travel


@pytest.fixture(scope="module")
def results(synthetic):
    exp = paper_experiment(
        "lenet300", iterations=30, eval_every=10, eval_examples=200, rounds=2, trials=2, controls=("reinit",)
    )
    return run(exp, synthetic, results_store=False, progress=False)


def test_weight_travel_splits_the_dense_weights_by_the_ticket_mask(results):
    travel = weight_travel(results, level=2)
    assert len(travel) == 2 * 266_200
    kept = travel.groupby("trial").in_ticket.sum()
    assert list(kept) == [sum(int(m.sum()) for m in mask.values()) for mask in results.masks[2]]
    first = travel[(travel.trial == 0) & (travel.layer == "fc1")]
    theta0 = results.initial_weights[0]["layers.fc1.weight"].flatten()
    trained = results.dense_weights[0]["layers.fc1.weight"].flatten()
    assert torch.equal(torch.tensor(first.initial.to_numpy()), theta0)
    assert torch.equal(torch.tensor(first.travel.to_numpy()), (trained - theta0).abs())
    summary = travel_summary(travel)
    assert set(summary.layer) == {"fc1", "fc2", "fc3"} and summary.weights.sum() == len(travel)
    with pytest.raises(ValueError, match="level must be one of the pruned levels"):
        weight_travel(results, level=0)


def test_level_near_picks_the_closest_pruned_level(results):
    assert results.level_near(80.0) == 1 and results.level_near(10.0) == 2 and results.level_near(100) == 1
    assert results.percent_remaining(2) == pytest.approx(64.06, abs=0.01)


def test_summaries_cover_every_kind_and_level(results):
    text = summary_text(results)
    assert len(text.splitlines()) == 1 + 1 + 2 * 2  # header, dense, (ticket + reinit) per level
    gaps = control_gaps(results)
    assert list(gaps.level) == [1, 2]
    assert {"acc_gap_vs_reinit", "early_stop_ratio_reinit"} <= set(gaps.columns)
