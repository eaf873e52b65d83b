"""The run store: atomic, never clobbers, reports corrupt records, safe with two processes."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from image_bench.experiments.config import RunConfig
from image_bench.experiments.store import (
    ConflictError,
    CorruptRecordError,
    RunStore,
    spec_key,
)


def _put(store, key, value=1.0):
    return store.put(key, "eval", {"what": key}, {"value": value}, {"commit": "x"})


def test_put_get_roundtrip_and_no_temp_left(tmp_path):
    store = RunStore(tmp_path)
    rec = _put(store, "abc")
    assert store.get("abc") == rec
    assert "abc" in store and "other" not in store
    assert [p.name for p in tmp_path.glob("*.json")] == ["abc.json"]
    assert not list(tmp_path.glob(".*.tmp*"))


def test_existing_record_is_kept_not_overwritten(tmp_path):
    store = RunStore(tmp_path)
    _put(store, "abc", 1.0)
    again = _put(store, "abc", 2.0)  # same spec: the first record wins
    assert again["result"]["value"] == 1.0
    assert store.get("abc")["result"]["value"] == 1.0
    with pytest.raises(ConflictError):
        store.put("abc", "eval", {"what": "different"}, {}, {})


@pytest.mark.parametrize("content,reason", [("", "empty"), ('{"key": "abc", "ki', "JSON"),
                                            ('{"key": "abc"}', "missing fields"),
                                            ("[1, 2]", "not a JSON object")])
def test_corrupt_record_is_reported_with_its_path(tmp_path, content, reason):
    store = RunStore(tmp_path)
    _put(store, "good")
    (tmp_path / "abc.json").write_text(content)
    with pytest.raises(CorruptRecordError) as err:
        store.get("abc")
    assert str(tmp_path / "abc.json") in str(err.value) and reason in str(err.value)
    problems = store.check()
    assert [p.path.name for p in problems] == ["abc.json"]
    with pytest.raises(CorruptRecordError):
        store.records()
    with pytest.raises(CorruptRecordError):  # never written over either
        _put(store, "abc")


def test_key_is_hash_of_resolved_config():
    a = RunConfig("crnn", "synth", "smoke", 10, 4)
    assert a.key() == RunConfig("crnn", "synth", "smoke", 10, 4).key()
    assert a.key() != a.with_(seed=1).key()
    assert spec_key({"a": 1, "b": 2}) == spec_key({"b": 2, "a": 1})


def _writer(root, n, tag, barrier):
    store = RunStore(root)
    barrier.wait()
    for i in range(n):
        with store.lock(f"k{i}"):  # the runner's check-then-work-then-write pattern
            if store.get(f"k{i}") is None:
                store.put(f"k{i}", "eval", {"what": i}, {"by": tag}, {})


def test_two_processes_on_one_store_do_not_corrupt_it(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(tmp_path, 40, tag, barrier)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = RunStore(tmp_path)
    records = store.records()
    assert len(records) == 40 and not store.check()
    assert sorted(r["key"] for r in records) == sorted(f"k{i}" for i in range(40))
    for path in tmp_path.glob("*.json"):
        json.loads(path.read_text())
