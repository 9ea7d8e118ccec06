"""docs/api.md's error table and the classes in service/errors.py say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service import errors
from service.errors import APIError, error_classes
from service.middleware import BodyTooLarge

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
NEVER_SENT = {errors.Unavailable}  # the generic 503: every 503 the server sends is a subclass


def _table() -> dict[str, int]:
    """code -> status, from the table under '## Errors'."""
    text = DOC.read_text()
    section = text[text.index("## Errors") :]
    section = section[: section.index("\n## ", 1)]
    table: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for code in re.findall(r"`([a-z0-9_]+)`", cells[2]):
                assert code not in table, f"{code} listed twice"
                table[code] = int(cells[0])
    return table


def _sent() -> dict[str, int]:
    codes = {cls.code: cls.status for cls in error_classes() if cls not in NEVER_SENT}
    codes[BodyTooLarge.code] = 413  # raised from the body stream: an HTTPException, not an APIError
    return codes


def test_every_class_is_in_the_table_with_its_status() -> None:
    table = _table()
    missing = {code: status for code, status in _sent().items() if table.get(code) != status}
    assert not missing, f"docs/api.md lacks (or has another status for) {missing}"


def test_every_code_in_the_table_is_a_class() -> None:
    extra = set(_table()) - set(_sent())
    assert not extra, f"docs/api.md lists codes no class sends: {sorted(extra)}"


def test_codes_are_unique() -> None:
    classes = [cls for cls in error_classes() if cls is not errors.InternalError]
    codes = [cls.code for cls in classes]  # InternalError repeats the base's internal_error
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", error_classes()[1:], ids=lambda c: c.__name__)
def test_each_class_renders_both_shapes(cls: type[APIError]) -> None:
    rest = errors.render("/predict", cls("why"))
    assert rest.status_code == cls.status
    assert json.loads(rest.body) == {"error": {"code": cls.code, "message": "why"}}
    oip = errors.render("/v2/models/x/infer", cls("why"))
    assert oip.status_code == cls.status and json.loads(oip.body) == {"error": "why"}
    if cls.status == 503:
        assert rest.headers["retry-after"] == str(errors.RETRY_AFTER_S)
    if cls.status == 401:
        assert rest.headers["www-authenticate"] == "Bearer"
