"""A live server on the committed models for the page tests (real HTTP, 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.serving import LiveServer


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live
