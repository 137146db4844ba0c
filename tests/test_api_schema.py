"""The OpenAPI document is true: requests generated from it (schemathesis) never get a 5xx, and every
answer matches the documented status codes, content types and response schemas.

Bounded (a few examples per operation, the tiny GGUF at a small context) so it runs in the suite; the
routes that load or unload models are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_api_server import Served, serve_api

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - after the skip
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 5
SKIPPED = {"/v1/internal/model/load", "/v1/internal/model/unload"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), params={"n_ctx": 256}) as s:
        yield s


def _operations(served: Served) -> list:
    doc = httpx.get(f"{served.base}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if op.path not in SKIPPED]


def test_generated_requests_get_documented_answers_and_no_5xx(served: Served):
    operations = _operations(served)
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case) -> None:
            response = case.call(base_url=served.base, timeout=60)
            case.validate_response(response, checks=CHECKS)

        run()
    assert served.app.models.model_name == "tiny-llama.gguf"
