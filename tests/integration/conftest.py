"""Fixtures shared by several integration test modules."""

from __future__ import annotations

import pytest

from streams.settings import Settings
from tests.integration.ctr_oracle import CTR_WINDOWS


@pytest.fixture
def ctr_settings(isolated: Settings) -> Settings:
    """Short windows (10 s tumbling, 1 min hopping every 10 s, 5 s grace) so a short run closes many."""
    return isolated.model_copy(update={"ctr": CTR_WINDOWS})
