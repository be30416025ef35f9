"""canonical_json must write exactly what json.dumps writes: digests are compared across versions."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agentprobe.util.hashing import canonical_json, sha256_json


def _stdlib(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text())
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=6)
                       | st.dictionaries(st.text(max_size=8), kids, max_size=6), max_leaves=40)


@settings(max_examples=2000, deadline=None)
@given(_values)
def test_canonical_json_is_the_standard_librarys_text(value):
    assert canonical_json(value) == _stdlib(value)


def test_the_values_orjson_would_write_differently_take_the_standard_library():
    for value in [1e-05, 1e16, -1e-7, float("nan"), float("inf"), {1: "int key"}, 2**64, "\ud800 lone",
                  {"temperature": 0.7, "nested": [{"z": 1, "a": "é\u2028\x00"}]}]:
        assert canonical_json(value) == _stdlib(value)


def test_deep_nesting_falls_back_rather_than_failing():
    value: list = []
    for _ in range(400):  # past orjson's depth limit, within json's
        value = [value]
    assert canonical_json(value) == _stdlib(value)


def test_a_known_digest_is_unchanged():
    # Pinned: a change here would make runs recorded by earlier versions look different.
    assert sha256_json({"b": [1, 2.5, None], "a": "x"}) == \
        "ce74053d7a9997b7a9ffa28fba2f736e47c7ebb226ab093038bc0fba3a1554ee"
