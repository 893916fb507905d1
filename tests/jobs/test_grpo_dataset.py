"""A grpo dataset (a stored JSONL of rollouts) as the trainer reads it: text, or the exact token ids."""

from __future__ import annotations

import json

import pytest

from bitswarm.jobs.datasets import DatasetError, JsonlData
from bitswarm.models.generate import load
from bitswarm.models.importer import init_model
from bitswarm.store import BlobStore


@pytest.fixture(scope="module")
def store_tok(tmp_path_factory):
    store = BlobStore(tmp_path_factory.mktemp("grpo-data") / "store")
    model = init_model(store, "tiny", 0)
    return store, load(store, model, "repro")[1]


def _data(store, tok, *records) -> JsonlData:
    blob = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    return JsonlData(store, store.put_bytes(blob), tok, 16, 1, 0, True, order="sequential")


def test_token_ids_are_used_exactly_and_text_is_tokenized(store_tok):
    store, tok = store_tok
    eos = tok.eos_token_id
    data = _data(store, tok, {"prompt_ids": [5, 6, 7], "completion_ids": [8, eos], "advantage": 0.5},
                 {"prompt": "Add 2 and 3.", "completion": "5", "advantage": -0.5})
    first, second = data.records
    assert first.ids == [5, 6, 7, 8, eos] and first.loss_from == 3 and first.advantage == 0.5
    assert second.ids == tok("Add 2 and 3.", add_special_tokens=False)["input_ids"] + tok("5", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("record, needle", [
    ({"prompt_ids": [1], "completion_ids": [], "advantage": 1.0}, "'completion_ids' must be a list of 1 to"),
    ({"prompt_ids": [1], "completion_ids": [10**9], "advantage": 1.0}, "this model's vocabulary"),
    ({"prompt_ids": [1], "completion_ids": [-1], "advantage": 1.0}, "integer from 0 to"),
    ({"prompt_ids": [True], "completion_ids": [2], "advantage": 1.0}, "'prompt_ids' must be"),
    ({"prompt_ids": "1 2", "completion_ids": [2], "advantage": 1.0}, "'prompt_ids' must be"),
    ({"completion_ids": [2], "advantage": 1.0}, "'prompt_ids' must be"),
    ({"prompt": "x", "advantage": 1.0}, "or token id lists"),
    ({"prompt_ids": [1], "completion_ids": [2], "advantage": True}, "a number 'advantage'"),
])
def test_a_bad_record_is_refused_naming_the_line_and_what_is_allowed(store_tok, record, needle):
    store, tok = store_tok
    good = {"prompt_ids": [1], "completion_ids": [2], "advantage": 1.0}
    with pytest.raises(DatasetError, match="line 2") as e:
        _data(store, tok, good, record)
    assert needle in str(e.value)
