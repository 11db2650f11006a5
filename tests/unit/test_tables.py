"""The table catalogue says what the CQL files create: the same tables, keys and order of keys."""

from __future__ import annotations

import re

from streams.settings import project_dir
from streams.tables import CATALOGUE

CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS \$\{keyspace\}\.(\w+) \((.*?)\)\s*(?:WITH|;)", re.S)
KEY = re.compile(r"PRIMARY KEY \(\((.*?)\)(?:,\s*(.*?))?\)\s*$", re.S)


def cql_keys() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    found = {}
    for path in sorted((project_dir() / "deploy" / "cassandra" / "schema").glob("*.cql")):
        text = re.sub(r"--[^\n]*", "", path.read_text())
        for name, body in CREATE.findall(text):
            match = KEY.search(body.strip())
            if match is None:
                continue  # a single-column key (registry tables): not a result table
            partition = tuple(c.strip() for c in match.group(1).split(","))
            clustering = tuple(c.strip() for c in (match.group(2) or "").split(",") if c.strip())
            found[name] = (partition, clustering)
    return found


def test_every_result_table_of_the_schema_is_in_the_catalogue_with_its_exact_key() -> None:
    keys = cql_keys()
    assert {t.name for t in CATALOGUE} == set(keys)
    for table in CATALOGUE:
        assert (table.partition_key, table.clustering) == keys[table.name], table.name
        assert table.partition_key[0] == "pipeline_version"
