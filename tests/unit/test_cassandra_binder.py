"""The sink's `Binder` serializes exactly what the driver's `PreparedStatement.bind` does, for
every column type the result tables use (no Cassandra needed: the statement's metadata is built
here as the driver builds it from a PREPARE response)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from cassandra.cqltypes import (
    BooleanType,
    BytesType,
    DoubleType,
    Int32Type,
    ListType,
    LongType,
    UTF8Type,
    VarcharType,
)
from cassandra.protocol import ColumnMetadata
from cassandra.query import PreparedStatement
from hypothesis import given
from hypothesis import strategies as st

from streams.io.cassandra_sink import Binder

# As a PREPARE response gives them (`protocol.read_type`): text is varchar, lists are parameterized.
TYPES = {
    "text": VarcharType,
    "bigint": LongType,
    "int": Int32Type,
    "double": DoubleType,
    "boolean": BooleanType,
    "features": ListType.apply_parameters((DoubleType,)),
    "reasons": ListType.apply_parameters((VarcharType,)),
    "blob": BytesType,
    "utf8": UTF8Type,
}


def statement() -> PreparedStatement:
    columns = [ColumnMetadata("ks", "t", name, cql_type) for name, cql_type in TYPES.items()]
    return PreparedStatement(columns, b"id", [0], "INSERT ...", "ks", 5, None, None)


def test_the_common_types_take_the_fast_path() -> None:
    serializers = Binder(statement()).serializers
    assert [getattr(s, "__name__", "") for s in serializers] == [
        "encode", "pack", "pack", "pack", "pack", "_pack_doubles", "_pack_texts", "<lambda>", "encode",
    ]  # fmt: skip


texts = st.text(max_size=20)
doubles = st.floats(allow_nan=False)
row = st.tuples(
    texts,
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**31), 2**31 - 1),
    doubles,
    st.booleans(),
    st.lists(doubles, max_size=30),
    st.lists(texts, max_size=4),
    st.binary(max_size=20),
    texts,
)


@given(row)
def test_binds_as_the_driver_does(values: tuple[Any, ...]) -> None:
    prepared = statement()
    ours, theirs = Binder(prepared).bind(list(values)), prepared.bind(list(values))
    assert ours.values == theirs.values
    assert ours.routing_key == theirs.routing_key


def test_nulls_infinities_and_a_feature_row() -> None:
    prepared = statement()
    values = [None, None, 7, math.inf, False, [0.0, -1.5, 1e300, math.inf], [], None, "é"]
    assert Binder(prepared).bind(values).values == prepared.bind(values).values
    # a float where an integer column is expected is refused, as the driver refuses it
    with pytest.raises(TypeError):
        Binder(prepared).bind(["k", 1.5, 1, 1.0, True, [], [], b"", ""])
    with pytest.raises(ValueError, match="values for"):
        Binder(prepared).bind(["k"])
