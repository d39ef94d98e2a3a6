"""Successive forget requests: each from the previous checkpoint, a report after every one."""

from __future__ import annotations

import pytest

from unlearn_kb.evaluation.sequential import run_sequential, sequence_table, split_requests


def test_requests_split_the_forget_set_by_entity_without_overlap(toy_world):
    requests = split_requests(toy_world.forget, 4)
    entities = [{e.extras["entity"] for e in request} for request in requests]
    assert len(requests) == 4 and sum(len(r) for r in requests) == len(toy_world.forget)
    assert all(a.isdisjoint(b) for i, a in enumerate(entities) for b in entities[i + 1:])


@pytest.mark.slow
def test_two_successive_requests_each_start_from_the_last_checkpoint(toy_world, tmp_path):
    reports = run_sequential("idk_ft", 2, world=toy_world, out=tmp_path, overrides={"steps": 20})
    rows = sequence_table(reports)
    assert [row["request"] for row in rows] == [1, 2]
    assert (tmp_path / "request-1" / "manifest.json").exists()
    manifest_2 = (tmp_path / "request-2" / "manifest.json").read_text()
    assert str(tmp_path / "request-1") in manifest_2  # request 2 unlearned from request 1's model
    for row in rows:  # a refusal-trained model stops saying the forget answers at every request
        assert row["forget_rouge_l"] < 0.5 and row["retain_rouge_l"] > 0.7, row
