"""One import name: the installed package works from anywhere, and a wheel holds only `ticketsearch/`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_imports_without_the_repository_on_the_path(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        "for name in ('index_data', 'retrieval', 'rerank', 'service'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "from ticketsearch.index_data.schema import builtin_schema_names, load_schema\n"
        "assert load_schema('support').name == 'support' and 'jira' in builtin_schema_names()\n"
        "import ticketsearch.service.cli, ticketsearch.service.app, ticketsearch.pipeline.training\n"
        "from ticketsearch import TicketIndex\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_wheel_holds_only_the_one_package(tmp_path: Path) -> None:
    src = tmp_path / "src"  # setuptools writes build/ beside the sources: build a copy
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "demo", "runs", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    out = tmp_path / "dist"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = out.glob("ticketsearch-*.whl")
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"ticketsearch", next(t for t in tops if t.endswith(".dist-info"))}, tops
    names = zipfile.ZipFile(wheel).namelist()
    page = [f"ticketsearch/service/{p.parent.name}/{p.name}" for p in (ROOT / "service").glob("*/*")
            if p.parent.name in ("templates", "static") and p.is_file()]  # every file the agent page serves
    assert len(page) >= 4
    for part in ("ticketsearch/retrieval/first_stage.py", "ticketsearch/index_data/schemas/support.toml",
                 "ticketsearch/pipeline/search.py", "ticketsearch/service/cli.py", "ticketsearch/api.py",
                 "ticketsearch/requests.py", "ticketsearch/rerank/general_model/config.json",
                 "ticketsearch/rerank/general_model/model.safetensors", *page):
        assert part in names, part
