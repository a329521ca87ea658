"""Schemathesis against the OpenAPI document and a live server: for every operation,
generated valid and invalid requests (a bounded number each) never get a 500, and
every answer matches the document (status code, content type, body schema).

Runs against a core of its own (each test module gets one): the generated requests ring phones, take them
off hook, roll the config back and forth; none of that may leak into other tests.
(schemathesis.pytest.from_fixture does not run under pytest 9, so each operation's
Hypothesis strategy is driven here directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from firmware.api import spec

EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
CASES = [(f"{method.upper()} {path}", mode)
         # /events streams until the client goes (tests/api/test_events.py covers it)
         for path, methods in spec.load()["paths"].items() if path not in ("/reboot", "/events")
         for method, operation in methods.items()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         # an operation that takes no input has no invalid request to make
         if mode is GenerationMode.POSITIVE or "requestBody" in operation
         or "parameters" in operation]


@pytest.fixture(scope="module")
def api_schema(live):
    schema = schemathesis.openapi.from_path(spec.SPEC_FILE)
    schema.config.update(base_url=f"http://{live.tcp}{spec.BASE}", request_timeout=20)
    return schema


@pytest.mark.parametrize("label, mode", CASES, ids=[f"{lb} {m.value}" for lb, m in CASES])
def test_no_500_and_every_answer_matches_the_document(api_schema, label, mode):
    operation = api_schema.find_operation_by_label(label)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS)

    run()


def test_reboot_answers_by_the_document(api_schema):
    operation = api_schema.find_operation_by_label("POST /reboot")
    case = operation.Case(body={})
    case.call_and_validate(checks=CHECKS)
