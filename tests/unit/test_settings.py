from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import load_settings


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_KAFKA__BOOTSTRAP", "broker:19092")
    monkeypatch.setenv("STREAMS_CASSANDRA__HOSTS", '["c1", "c2"]')
    monkeypatch.setenv("STREAMS_RUNTIME__KAFKA_HEAP", "256m")
    settings = load_settings()
    assert settings.kafka.bootstrap == "broker:19092"
    assert settings.cassandra.hosts == ("c1", "c2")
    assert settings.runtime.kafka_heap == "256m"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_CASSANDRA__USERNAME", "app")
    monkeypatch.setenv("STREAMS_CASSANDRA__PASSWORD", "hunter2-secret")
    settings = load_settings()
    assert settings.cassandra.password is not None
    assert settings.cassandra.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.model_dump())


def test_an_invalid_value_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_KAFKA__PARTITIONS", "zero")
    with pytest.raises(ConfigError, match=r"invalid setting kafka.partitions"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.kafka.bootstrap = "x"  # type: ignore[misc]
