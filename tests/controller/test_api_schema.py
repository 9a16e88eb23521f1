"""The API against its own OpenAPI document: the committed copy is current, and schemathesis
finds no 5xx and no response that breaks the schema.

Run size: the 16 operations other than the two SSE streams (which never end), each with up to
MAX_EXAMPLES = 50 generated cases, positive and negative, against a live server with the fake
sandbox: about 750 requests, ~20 s on two cores (`--hypothesis-show-statistics` shows counts).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import FakeFactory, LiveServer, write_config
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from controller.api.app import create_app, openapi_document
from controller.settings import Settings, load_settings

MAX_EXAMPLES = 50
# Schema-valid bodies these refuse by rule, with a 4xx naming why: folders must be granted
# (the grants are configuration, not schema), timeouts are capped by a setting, and pairing
# codes must be real.
BUSINESS_RULES = {("POST", "/api/v1/tasks"), ("POST", "/api/v1/pair")}
DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"


def current_document() -> dict[str, object]:
    return openapi_document(create_app(Settings()))


def test_docs_openapi_json_is_the_apps_current_document() -> None:
    committed = json.loads(DOCUMENT.read_text())
    assert committed == current_document(), (
        "docs/openapi.json is stale; regenerate it with `dispatch openapi -o docs/openapi.json`"
    )


def test_every_operation_documents_its_errors_in_the_error_shape() -> None:
    document = current_document()
    for path, operations in document["paths"].items():  # type: ignore[attr-defined]
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="dispatch-schema-"))
    (root / "projects").mkdir()
    (root / "readonly").mkdir()
    flags = {
        "data_dir": root / "data",
        "sandbox_backend": "fake",
        "max_task_timeout_s": 5.0,
        "default_task_timeout_s": 1.0,
    }
    live = LiveServer(
        load_settings(flags, {"XDG_CONFIG_HOME": str(root)}, config=write_config(root)),
        FakeFactory(),
    )
    live.start()
    yield live
    live.stop()
    shutil.rmtree(root, ignore_errors=True)


# 413 (body over max_body_bytes) is a rejection too; schemathesis's default list lacks it.
REJECTIONS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
schema = schemathesis.openapi.from_dict(current_document(), config=CONFIG).exclude(
    path_regex=r"/events$"
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors_and_responses_match_the_schema(
    case: schemathesis.Case, server: LiveServer
) -> None:
    excluded = []
    if (case.method, case.path) in BUSINESS_RULES:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=server.url, headers=server.headers, excluded_checks=excluded)
