"""Mutation testing of the core modules with cosmic-ray (issue 31): each module's mutants run against that
module's own fast tests, in a copy of the working tree (the tree itself is never mutated).

    python scripts/mutate.py                      # every module below
    python scripts/mutate.py --module fusion      # one
    make mutate                                   # the same as the first, the report into docs/mutation.json
    python scripts/mutate.py --module fusion --survivors --out docs/mutation.json
                                                  # after new tests: only the last report's survivors again

A re-run of the survivors gives the same count as a whole run while the module is unchanged (the report keeps its
file's hash; a changed file is refused): tests were only added, so a killed mutant stays killed.

Per module: mutants made (cosmic-ray's operators), killed (a test failed or timed out), survived; the survivors
listed by line and operator. The copy's modules come first on the import path (PYTHONPATH), ahead of the
editable install's finder, so the tests import the mutated file.
"""

from __future__ import annotations

import argparse
import hashlib
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
    "requests": ("ticketsearch/requests.py", "tests/test_requests.py"),
    "records": ("index_data/records.py", "tests/index_data/test_records.py"),
    "install": ("ticketsearch/pipeline/install.py", "tests/pipeline/test_install.py"),
    "names": ("ticketsearch/names.py", "tests/test_names.py"),
    "versions": ("index_data/versions.py", "tests/index_data/test_versions.py "
                 "tests/index_data/test_store.py::test_a_write_applies_only_over_an_older_version"),
}
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "demo", "build", "*.egg-info", ".mypy_cache",
                                     ".ruff_cache", ".pytest_cache")


def run_module(name: str, work: Path, timeout: float, previous: dict | None = None) -> dict:
    """Every mutant of the module, or (`previous`: its last report) only the mutants that survived it."""
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
    digest = hashlib.sha256((work / "tree" / path).read_bytes()).hexdigest()
    if previous is not None:
        keep_only(session, previous, digest)
    baseline = subprocess.run(f"{sys.executable} -m pytest -q -x -p no:logging -p no:cacheprovider {tests}",
                              shell=True, cwd=work / "tree", env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: its tests fail before any mutation:\n{baseline.stdout[-2000:]}")
    subprocess.run([cr, "exec", str(config), str(session)], cwd=work / "tree", env=env, check=True,
                   capture_output=True)
    seconds = round(time.perf_counter() - t0)
    report = {"module": path, "tests": tests, "sha256": digest, "seconds": seconds, **summary(session)}
    if previous is None:
        return report
    killed = previous["killed"] + report["killed"]  # the last run's kills stand: the module and its tests are kept
    return {**report, "mutants": previous["mutants"], "killed": killed,
            "score": round(killed / previous["mutants"], 3), "seconds": previous.get("seconds"),
            "survivors_rerun": {"retested": previous["survived"], "killed": report["killed"], "seconds": seconds}}


def survivor_key(operator: str, line: int, occurrence: int) -> str:
    return f"line {line}: {operator} #{occurrence}"


def keep_only(session: Path, previous: dict, digest: str) -> None:
    """Leave in the session only the mutants that survived the `previous` report, refusing a module that changed
    since (its hash where the report has one, else its mutants' count and the survivors' names)."""
    from cosmic_ray.work_db import WorkDB, use_db  # deferred: cosmic-ray, installed by `make mutate`

    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.work_items)
        wanted = set(previous["survivors"])
        kept = [i for i in items if any(survivor_key(m.operator_name, m.start_pos[0], m.occurrence) in wanted
                                        for m in i.mutations)]
        if previous.get("sha256", digest) != digest or len(items) != previous["mutants"] or len(kept) != len(wanted):
            raise SystemExit(f"{previous['module']} changed since its last report: run all of its mutants")
        db.clear()
        db.add_work_items(kept)


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
            "survivors": [survivor_key(*r[:3]) for r in survived]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES), help="default: every module")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--survivors", action="store_true",
                    help="only the mutants that survived each module's last report in --out (after new tests)")
    args = ap.parse_args()
    last: dict[str, dict] = {}
    if args.survivors:
        if args.out is None or not args.out.is_file():
            ap.error("--survivors re-runs the survivors of the report in --out: give an existing one")
        last = {r["module"]: r for r in json.loads(args.out.read_text())["modules"]}
    report = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT, work / "tree", symlinks=True, ignore=COPY_IGNORE)
        for name in args.module or list(MODULES):
            print(f"{name}: mutating {MODULES[name][0]} ...", flush=True)
            if args.survivors and MODULES[name][0] not in last:
                raise SystemExit(f"{name}: no last report in {args.out} to take the survivors of")
            report.append(run_module(name, work, args.timeout, last.get(MODULES[name][0])))
            r = report[-1]
            took = r["survivors_rerun"]["seconds"] if "survivors_rerun" in r else r["seconds"]
            print(f"{name}: {r['killed']} of {r['mutants']} killed ({r['score']}), {r['survived']} survived in "
                  f"{took} s{' (the last survivors only)' if 'survivors_rerun' in r else ''}", flush=True)
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
