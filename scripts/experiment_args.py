"""The arguments every script over an experiment's index shares (the index, the output, the split dates)."""

from __future__ import annotations

import argparse
from pathlib import Path


def experiment_index_parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    ap.add_argument("--index", type=Path, required=True, help="an index `ticketsearch experiment` built")
    ap.add_argument("--out", type=Path, required=True, help="write the JSON here")
    ap.add_argument("--train-before", default="2015-01-01")
    ap.add_argument("--test-since", default="2016-01-01")
    return ap
