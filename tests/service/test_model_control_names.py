"""Explicit load never reaches outside the model directory, whatever name it is given."""

from __future__ import annotations

import pytest

from service.lifecycle.control import _plain_name


@pytest.mark.parametrize("name", ["digits", "flowers-v2", "model_1"])
def test_plain_directory_names_are_models(name: str) -> None:
    assert _plain_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "../etc", "a/b", "a\\b", "/abs"])
def test_paths_and_hidden_names_are_not(name: str) -> None:
    assert not _plain_name(name)
