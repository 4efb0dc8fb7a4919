"""Mutation testing of the core modules with cosmic-ray (issue 31): each module's mutants run against that
module's own fast tests, in a copy of the working tree (the tree itself is never mutated).

    python scripts/mutate.py                      # every module below
    python scripts/mutate.py --module fusion      # one
    make mutate                                   # the same as the first, the report into docs/mutation.json

Per module: mutants made (cosmic-ray's operators), killed (a test failed or timed out), survived; the survivors
listed by line and operator. The copy's modules come first on the import path (PYTHONPATH), ahead of the
editable install's finder, so the tests import the mutated file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ticketsearch.atomic import atomic_write_json  # noqa: E402

# module -> (file, the fast tests that should kill its mutants)
MODULES: dict[str, tuple[str, str]] = {
    "fusion": ("retrieval/fusion.py", "tests/retrieval/test_fusion.py"),
    "costs": ("service/costs.py", "tests/service/test_costs.py"),
    "calibration": ("rerank/calibration.py", "tests/rerank/test_calibration.py"),
    "pair_features": ("rerank/pair_features.py", "tests/rerank/test_pair_features.py"),
}
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "demo", "build", "*.egg-info", ".mypy_cache",
                                     ".ruff_cache", ".pytest_cache")


def run_module(name: str, work: Path, timeout: float) -> dict:
    path, tests = MODULES[name]
    config = work / f"{name}.toml"
    session = work / f"{name}.sqlite"
    config.write_text(f"""[cosmic-ray]
module-path = "{path}"
timeout = {timeout}
excluded-modules = []
test-command = "{sys.executable} -m pytest -q -x -p no:logging -p no:cacheprovider {tests.replace('"', "'")}"

[cosmic-ray.distributor]
name = "local"
""")
    env = {**os.environ, "PYTHONPATH": str(work / "tree"), "HF_HUB_OFFLINE": "1"}
    cr = str(Path(sys.executable).parent / "cosmic-ray")
    t0 = time.perf_counter()
    subprocess.run([cr, "init", str(config), str(session)], cwd=work / "tree", env=env, check=True,
                   capture_output=True)
    baseline = subprocess.run(f"{sys.executable} -m pytest -q -x -p no:logging -p no:cacheprovider {tests}",
                              shell=True, cwd=work / "tree", env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: its tests fail before any mutation:\n{baseline.stdout[-2000:]}")
    subprocess.run([cr, "exec", str(config), str(session)], cwd=work / "tree", env=env, check=True,
                   capture_output=True)
    return {"module": path, "tests": tests, "seconds": round(time.perf_counter() - t0), **summary(session)}


def summary(session: Path) -> dict:
    """The session's outcomes, read through cosmic-ray's own session API (no SQL of ours)."""
    from cosmic_ray.work_db import WorkDB, use_db  # deferred: cosmic-ray, installed by `make mutate`

    with use_db(str(session), WorkDB.Mode.open) as db:
        rows = [(m.operator_name, m.start_pos[0], m.occurrence, result.test_outcome.name, result.worker_outcome.name)
                for item, result in db.completed_work_items for m in item.mutations]
    # cosmic-ray's outcomes: KILLED (a test failed), SURVIVED, INCOMPETENT (the mutant could not run: it counts
    # as killed, as cosmic-ray's own report counts it); a timeout is a killed mutant too
    killed = [r for r in rows if str(r[3]).upper() in ("KILLED", "INCOMPETENT") or str(r[4]).upper() == "TIMEOUT"]
    survived = sorted((r for r in rows if str(r[3]).upper() == "SURVIVED"), key=lambda r: (r[1], r[0]))
    return {"mutants": len(rows), "killed": len(killed), "survived": len(survived),
            "score": round(len(killed) / len(rows), 3) if rows else None,
            "survivors": [f"line {r[1]}: {r[0]} #{r[2]}" for r in survived]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES), help="default: every module")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT, work / "tree", symlinks=True, ignore=COPY_IGNORE)
        for name in args.module or list(MODULES):
            print(f"{name}: mutating {MODULES[name][0]} ...", flush=True)
            report.append(run_module(name, work, args.timeout))
            r = report[-1]
            print(f"{name}: {r['killed']} of {r['mutants']} killed ({r['score']}), {r['survived']} survived in "
                  f"{r['seconds']} s", flush=True)
            for s in r["survivors"]:
                print(f"  survived: {s}")
    if args.out:  # modules not run this time keep their last report
        done = {r["module"] for r in report}
        try:
            kept = [r for r in json.loads(args.out.read_text())["modules"] if r["module"] not in done]
        except (OSError, ValueError, KeyError):
            kept = []
        order = [MODULES[n][0] for n in MODULES]
        merged = sorted([*kept, *report], key=lambda r: order.index(r["module"]) if r["module"] in order else 99)
        atomic_write_json(args.out, {"tool": "cosmic-ray", "modules": merged})


if __name__ == "__main__":
    main()
