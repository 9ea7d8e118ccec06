"""schemathesis against the live server's own /openapi.json: for every operation a
bounded number of generated requests, valid and invalid, none may get a 5xx and
every response must match the schema (status codes, media types, bodies).

Operations are listed at collection from the app's schema (no server needed then);
each test loads the live server's document, and fuzzes that."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from service.app import create_app
from tests.service.serving import LiveServer
from tests.service.serving import settings as server_settings

EXAMPLES = 25  # per operation and mode: the suite stays within a minute or two


def _cases() -> list[tuple[str, schemathesis.GenerationMode]]:
    """(operation, mode) pairs: negative data only where there is input to make invalid."""
    paths = create_app(server_settings()).openapi()["paths"]
    out = []
    for path, item in paths.items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            out.append((label, schemathesis.GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                out.append((label, schemathesis.GenerationMode.NEGATIVE))
    return sorted(out)


# A schema-valid body is not a valid image (the schema cannot say "a PNG of a digit"),
# so the server may reject generated "positive" data; and the API is lenient on
# purpose where the schema cannot say so (`top_k=` means the default, unknown query
# parameters are ignored), which the negative-data check counts as failures. Every
# generated request must still get no 5xx and an answer the schema documents.
_EXCLUDED = [
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api(live: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


@pytest.mark.parametrize(("label", "mode"), _cases(), ids=lambda v: str(v))
def test_every_operation_answers_within_its_schema(
    api: schemathesis.BaseSchema, live: LiveServer, label: str, mode: schemathesis.GenerationMode
) -> None:
    operation = api.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live /openapi.json"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live.url, excluded_checks=_EXCLUDED)

    try:
        fuzz()
    except Unsatisfiable:  # e.g. only string path parameters: every value is schema-valid
        assert mode is schemathesis.GenerationMode.NEGATIVE
        pytest.skip("no schema-invalid request can be made for this operation")
