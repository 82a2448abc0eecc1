"""One rank's checkpoint loaded on several ranks: its records count once per rank, said by a warning.

docs/aggregation.md: "Under DDP each rank checkpoints its own (local) states ... one state loaded on several ranks
counts once per rank". A recipe that saves only rank 0's ``state_dict()`` (or a single-process run's) and loads it
on every rank of the resumed run logged every saved count twice on 2 ranks, without a word. The values stay what
they are (the aggregator cannot know which rank should have kept the records); the logging call warns, naming the
ranks and the saved rank. References: plain Python sums over the records.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
import torch

from torchmetrics_ext.aggregation import AggregationType, Metric, MetricsAggregator

pytestmark = pytest.mark.ddp

A = AggregationType
SAVED = [3, 4, 5]  # tokens_seen of the records in the saved state
NEW = {0: [10, 20], 1: [7]}  # each rank's records after the resume


def _records(tokens: list[int]) -> list[Metric]:
    return [Metric("alpaca", "tokens_seen", n, A.SUM) for n in tokens] + [
        Metric("alpaca", "samples_seen", 1, A.SUM) for _ in tokens
    ]


def _through_file(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _log(aggregator: MetricsAggregator) -> tuple[dict[str, float], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = aggregator.get_metrics_for_logging(prefix="train")
    return logged, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _job(rank: int, world_size: int, scenario: str, single_state: dict[str, Any]) -> dict[str, Any]:
    if scenario == "own":  # every rank saves its own state in this run and loads it back
        before = MetricsAggregator()
        before.update(_records([rank + 1, rank + 2]))
        state = _through_file(before.state_dict())
    else:  # the state a single-process run saved, loaded on every rank
        state = single_state
        if scenario == "old":  # a checkpoint written before the saving rank was recorded
            state = {**state, "metadata": {k: v for k, v in state["metadata"].items() if k != "saved_by"}}
    resumed = MetricsAggregator()
    resumed.load_state_dict(state)
    resumed.update(_records(NEW[rank]))
    first = _log(resumed)
    second = _log(resumed)
    resumed.reset()
    after_reset = _log(resumed)
    return {"first": first, "second": second, "after_reset": after_reset}


def _single_state() -> dict[str, Any]:
    saved = MetricsAggregator()
    saved.update(_records(SAVED))
    return _through_file(saved.state_dict())


def test_one_state_loaded_on_every_rank_warns_and_names_the_ranks(ddp_pool):
    out = ddp_pool.run(_job, "copied", _single_state())
    counted_twice = 2 * sum(SAVED) + sum(NEW[0]) + sum(NEW[1])  # the documented value: once per rank
    for rank, result in enumerate(out):
        logged, messages = result["first"]
        assert logged == {
            "train_alpaca/tokens_seen": float(counted_twice),
            "train_alpaca/samples_seen": float(2 * len(SAVED) + len(NEW[0]) + len(NEW[1])),
        }, rank
        assert len(messages) == 1, (rank, messages)
        assert "ranks 0, 1 loaded the state that rank 0 of a 1-rank run saved" in messages[0], messages[0]
        assert "counted 2 times" in messages[0], messages[0]
        assert result["second"] == (logged, []), rank  # said once, until reset() or another load
        assert result["after_reset"] == ({}, []), rank


@pytest.mark.parametrize("scenario", ["own", "old"])
def test_each_rank_its_own_state_or_an_unmarked_one_does_not_warn(ddp_pool, scenario):
    out = ddp_pool.run(_job, scenario, _single_state())
    if scenario == "own":
        tokens = sum(r + 1 + r + 2 for r in range(2)) + sum(NEW[0]) + sum(NEW[1])
        samples = 4 + len(NEW[0]) + len(NEW[1])
    else:  # a checkpoint that does not say who saved it cannot be told from two ranks' own: counted twice, no word
        tokens = 2 * sum(SAVED) + sum(NEW[0]) + sum(NEW[1])
        samples = 2 * len(SAVED) + len(NEW[0]) + len(NEW[1])
    for rank, result in enumerate(out):
        assert result["first"] == (
            {"train_alpaca/tokens_seen": float(tokens), "train_alpaca/samples_seen": float(samples)},
            [],
        ), rank


def test_the_saving_rank_is_in_the_metadata_and_a_single_process_does_not_warn():
    saved = MetricsAggregator()
    saved.update(_records(SAVED))
    state = saved.state_dict()
    assert state["metadata"]["saved_by"] == [0, 1]  # [rank, world size]: JSON-safe
    resumed = MetricsAggregator()
    resumed.load_state_dict(_through_file(state))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resumed.get_metrics_for_logging() == {
            "train_alpaca/tokens_seen": float(sum(SAVED)),
            "train_alpaca/samples_seen": float(len(SAVED)),
        }
