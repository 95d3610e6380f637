"""Schemathesis sends generated requests built from our own OpenAPI document: no 5xx, ever."""
from __future__ import annotations

import os

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from openapi_spec_validator import validate  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from chatterbox_server.api.docs.pages import build_spec  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]
SCHEMA = schemathesis.openapi.from_dict(build_spec())
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))      # `make fuzz` asks for a nightly-sized run
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}


def test_openapi_document_is_valid():
    validate(build_spec())


@pytest.mark.parametrize("engine", ["hibari", "tone"])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_generated_requests_never_get_a_server_error(request, engine, name):
    server = request.getfixturevalue(f"{engine}_server")
    operation = OPERATIONS[name]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(base_url=server.base, timeout=120)
        case.validate_response(response, checks=[not_a_server_error])
        if name == "POST /v1/audio/speech/long" and response.status_code == 200:
            # a generated long-text job would keep the shared server's model worker busy for minutes
            requests.delete(f"{server.base}/v1/audio/speech/long/{response.json()['job_id']}?action=delete")

    check()


def test_every_route_is_documented():
    assert len(OPERATIONS) >= 15
