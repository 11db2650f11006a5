from __future__ import annotations

import json
import re

import pytest

from streams.errors import RuntimeServiceError
from streams.events import (
    REJECTION_KINDS,
    Coordinates,
    DeadLetter,
    Rejected,
    load_validator,
)
from streams.io.cassandra import schema_statements
from streams.settings import load_settings
from streams.tables import DEAD_LETTERS

SCHEMA_DIR = load_settings().deploy_dir / "cassandra" / "schema"
SCHEMAS = load_settings().schemas_dir


def test_cql_is_idempotent_and_keyspace_is_filled_in() -> None:
    statements = schema_statements(SCHEMA_DIR, "ks_test", 3)
    assert statements[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks_test")
    assert "'replication_factor': 3" in statements[0]
    adds = [s for s in statements if s.startswith("ALTER TABLE")]
    assert all("IF NOT EXISTS" in s for s in statements if s not in adds)
    metrics_columns = [
        "computed_at timestamp", "recall_at_k double", "insufficient boolean", "holdout_flagged bigint",
        "holdout_flagged_fraud bigint", "missed_fraud double", "precision_low double",
        "precision_high double", "recall_low double", "recall_high double", "pooled_insufficient boolean",
        "pooled_holdout_flagged bigint", "pooled_precision double", "pooled_precision_low double",
        "pooled_precision_high double", "pooled_recall double", "pooled_recall_low double",
        "pooled_recall_high double",
    ]  # fmt: skip
    assert adds == [
        "ALTER TABLE ks_test.fraud_transactions ADD source_offset bigint",
        *(f"ALTER TABLE ks_test.fraud_cohort_metrics ADD {column}" for column in metrics_columns),
    ]
    # and every column added is in the table's CREATE statement too
    create = next(s for s in statements if "TABLE IF NOT EXISTS ks_test.fraud_cohort_metrics" in s)
    assert all(f"  {column}" in create for column in metrics_columns)
    assert any("ks_test.smoke_events" in s for s in statements)


def test_a_column_add_is_skipped_where_the_column_exists() -> None:
    """A keyspace from before the column gets it; one created from today's files has it (skipped)."""
    from types import SimpleNamespace

    from streams.io.cassandra import _exists

    add = "ALTER TABLE ks.fraud_transactions ADD source_offset bigint"

    def metadata(columns: list[str]) -> SimpleNamespace:
        table = SimpleNamespace(columns=dict.fromkeys(columns))
        return SimpleNamespace(keyspaces={"ks": SimpleNamespace(tables={"fraud_transactions": table})})

    assert _exists(metadata(["transaction_id", "source_offset"]), add)
    assert not _exists(metadata(["transaction_id"]), add)
    assert not _exists(SimpleNamespace(keyspaces={}), add)


def test_a_keyspace_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(RuntimeServiceError):
        schema_statements(SCHEMA_DIR, "ks; DROP TABLE x", 1)


def test_the_dead_letters_table_holds_every_column_of_a_fallback_row_under_its_coordinates() -> None:
    statement = next(s for s in schema_statements(SCHEMA_DIR, "ks", 1) if "ks.dead_letters " in s)
    assert "PRIMARY KEY ((pipeline_version, topic, partition), offset)" in statement
    assert DEAD_LETTERS.primary_key == ("pipeline_version", "topic", "partition", "offset")
    columns = set(re.findall(r"^\s*(\w+) \w+,", statement, re.MULTILINE))
    letter = DeadLetter(b"{", Coordinates("t", 0, 1, key=b"k"), Rejected("malformed_json", "x"))
    assert set(letter.to_row("v1")) == columns


def test_a_capped_dead_letter_record_follows_its_schema() -> None:
    schema = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
    at = Coordinates("ad-events", 0, 5, timestamp_ms=1, key=b"k" * 100_000)
    letter = DeadLetter(b"x" * 2_000_000, at, Rejected("processing_error", "reason " * 1_000))
    record = letter.to_record("v1")
    load_validator(SCHEMAS / "dead_letter.schema.json")(record)
    assert record["raw_truncated"] and record["key_truncated"]
    assert set(schema["required"]) | {"timestamp_ms", "key_base64"} == set(record)
    assert schema["properties"]["reason_kind"]["enum"] == list(REJECTION_KINDS)


def test_the_sinks_own_unlogged_batch_warning_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import streams.io.cassandra  # noqa: F401  (installs the filter)

    driver = logging.getLogger("cassandra.protocol")
    with caplog.at_level(logging.WARNING, logger="cassandra.protocol"):
        driver.warning("Server warning: %s", "Unlogged batch covering 18 partitions detected against table x")
        driver.warning("Server warning: %s", "Aggregation query used without partition key")
    assert [r.getMessage() for r in caplog.records] == [
        "Server warning: Aggregation query used without partition key"
    ]
