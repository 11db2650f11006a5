from __future__ import annotations

import pytest

from streams.errors import RuntimeServiceError
from streams.io.cassandra import schema_statements
from streams.settings import load_settings

SCHEMA_DIR = load_settings().deploy_dir / "cassandra" / "schema"


def test_cql_is_idempotent_and_keyspace_is_filled_in() -> None:
    statements = schema_statements(SCHEMA_DIR, "ks_test", 3)
    assert statements[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks_test")
    assert "'replication_factor': 3" in statements[0]
    assert all("IF NOT EXISTS" in s for s in statements)
    assert any("ks_test.smoke_events" in s for s in statements)


def test_a_keyspace_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(RuntimeServiceError):
        schema_statements(SCHEMA_DIR, "ks; DROP TABLE x", 1)
