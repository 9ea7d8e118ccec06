"""One in-thread server on the committed models for the fuzzers (tests/service/serving.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.serving import LiveServer


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server
