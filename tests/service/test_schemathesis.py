"""Property-based API testing with schemathesis over the OpenAPI schema, against a real server.

The schemathesis command line itself, with every check on (`schemathesis run URL/openapi.json --checks all`):
every phase (examples, coverage, fuzzing, stateful) over every operation, valid and invalid requests. No 5xx,
every response as documented (status, content type, headers, body), invalid input refused and valid input
accepted, the Allow header of a 405 naming every documented method, auth enforced, and a deleted ticket gone.

The `default` collection's aliases (`/v1/search`, `/v1/tickets`, ...) are left out: they run the very handlers of
`/v1/collections/{name}/...`, and the stateful phase would take a ticket deleted through one path and read
through the other for two resources (tests/service/test_api.py covers the aliases).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .server import Server

KEY = "schemathesis-write-key"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
ALIASES = "^/v1/(search|duplicates|tickets|feedback|hooks|schema)"
EXAMPLES = 10  # per operation and phase (schemathesis' own default is 100)


@pytest.fixture(scope="module")
def api_server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("st")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log", env={"TICKETSEARCH_API_KEYS": f"{KEY}:write"}).start()
    yield srv
    srv.stop()


# A request over TICKETSEARCH_MAX_BODY_BYTES gets 413 (documented), whether or not it fits the schema: an
# OpenAPI schema counts characters, not the bytes of their JSON escapes (100,000 astral characters written as
# \\uXXXX pairs are 1.2 MB). 413 is a refusal, so both data checks take it besides their defaults.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]

# A ticket paired with itself is 422 by the API's rule, which JSON Schema cannot state (two fields equal).
[[operations]]
include-path = "/v1/collections/{name}/feedback"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "413", "422", "429", "5xx"]

# Rules of an inline schema that JSON Schema cannot state: no two fields of one name, no field that leaks the
# answer (status, resolution, ...), log1p only on a numeric field.
[[operations]]
include-path = "/v1/collections/{name}"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429", "5xx"]

# Training needs duplicate links and dedupe a trained model: the state of a collection, not of the request.
[[operations]]
include-path-regex = "/(train|dedupe)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429", "5xx"]
"""


def schemathesis(server: Server, key: str, seed: int, tmp_path: Path, *select: str) -> str:
    """The schemathesis command line with every check against `server`, as `key`; its output (asserted to pass)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [SCHEMATHESIS, "--config-file", str(config), "run", f"{server.url}/openapi.json", "--checks", "all",
           "--header", f"Authorization: Bearer {key}", "--max-examples", str(EXAMPLES), "--seed", str(seed),
           "--generation-database", "none", "--workers", "1", "--no-color", "--suppress-health-check", "all",
           *select]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)  # writes nothing but here
    out = "\n".join(line[:400] for line in (res.stdout + res.stderr).splitlines())  # generated bodies can be huge
    assert res.returncode == 0, out[-12000:]
    return out


def test_api_conforms_to_its_schema_with_every_check(api_server: Server, tmp_path: Path) -> None:
    out = schemathesis(api_server, KEY, 20261201, tmp_path, "--exclude-path-regex", ALIASES)
    assert "Selected: 23/34" in out and "Tested: 23" in out, out[-12000:]
    # every generated case passed (warnings: the admin routes answer a write key 403, and a job id or a new
    # collection's name cannot be guessed, so those routes answer 404)
    assert re.search(r"(\d+) generated, \1 passed", out), out[-12000:]


ADMIN = "schemathesis-admin-key"
# The admin routes: create, change and delete a collection, and start its training and dedupe jobs.
ADMIN_ROUTES = r"^/v1/collections/\{name\}(/train|/dedupe)?$"


@pytest.fixture(scope="module")
def root_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A service of collections (`serve --root`), keyed for an admin: what the admin routes do is real here."""
    root = tmp_path_factory.mktemp("st-root")
    srv = Server(root / "root", root / "server.log", root=True,
                 env={"TICKETSEARCH_API_KEYS": f"{ADMIN}:admin"}).start()
    yield srv
    srv.stop()


def test_the_admin_routes_conform_with_an_admin_key(root_server: Server, tmp_path: Path) -> None:
    """With an admin key the admin routes run for real (collections created from generated names and schemas,
    changed, deleted; jobs asked for on them): no 5xx, every answer as documented, bad input refused."""
    out = schemathesis(root_server, ADMIN, 20261205, tmp_path, "--include-path-regex", ADMIN_ROUTES)
    assert "Selected: 6/34" in out and "Tested: 6" in out, out[-12000:]
    assert re.search(r"(\d+) generated, \1 passed", out), out[-12000:]
    log = root_server.log()
    assert " 500 " not in log and "Traceback" not in log, log[-5000:]
    for done in (r'"PUT /v1/collections/\S+ HTTP/1.1" 201', r'"DELETE /v1/collections/\S+ HTTP/1.1" 20\d',
                 r'"PATCH /v1/collections/\S+ HTTP/1.1" 200'):  # the routes did their work, not only refused
        assert re.search(done, log), done
