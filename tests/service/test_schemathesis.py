"""Property-based API testing with schemathesis over the OpenAPI schema, against a real server.

Every generated request (valid and invalid) must get no 5xx, and every response must conform to the schema
(status code documented, body and headers as declared).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .server import Server

KEY = "schemathesis-write-key"


@pytest.fixture(scope="module")
def api_server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("st")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log", env={"TICKETSEARCH_API_KEYS": f"{KEY}:write"}).start()
    yield srv
    srv.stop()


def operations(srv: Server) -> list:
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_conforms_to_its_schema(api_server: Server, mode: GenerationMode) -> None:
    ops = operations(api_server)
    assert {op.label for op in ops} >= {"POST /v1/search", "POST /v1/tickets", "POST /v1/duplicates",
                                         "GET /v1/tickets/{ticket_id}/similar", "DELETE /v1/tickets/{ticket_id}"}
    failures: list[str] = []
    for op in ops:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def run(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # an operation without inputs has no invalid requests
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{op.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
