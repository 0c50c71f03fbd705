"""Hypothesis strategies for hostile MQTT payloads: valid messages mutated at random places, and
bytes and JSON that are no message at all (deep nesting, NaN literals, huge numbers, wrong types,
dates at the ends of the datetime range, oversized strings)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "dev-1",
            "dev-1\n",
            "١.٠",
            "../../etc/passwd",
            "x" * 5000,
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1970-01-01T00:00:00Z",
            "NaN",
            "-Infinity",
        ]
    ),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)

RAW = st.one_of(
    st.binary(max_size=512),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[" * 5000 + b"]" * 5000,
            b'{"kind": "benchmark", "device_id": "dev-1", "bench": {"warmup": NaN}}',
            b"\xff\xfe\x00garbage",
            b'{"kind": "deploy"}',
            b"null",
            b"[]",
            b'"a string"',
            b"1e999999",
        ]
    ),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """One of the ``valid`` payloads with one place replaced, removed, or given an unknown sibling."""
    doc = json.loads(draw(st.sampled_from(valid)))
    path = draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    if action == "replace" or isinstance(parent, list):
        parent[path[-1]] = draw(JSON_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    return json.dumps(doc, allow_nan=True).encode()


def hostile(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(valid), RAW, JSON_VALUES.map(lambda v: json.dumps(v).encode()))
