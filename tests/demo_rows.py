"""Demo tickets for tests: `generate` and `write_demo` with the last ticket pinned to DEMO_END, so the absolute
dates that tests filter and split on stay inside the data on any day (the product's default end is now)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ticketsearch.index_data import demo

DEMO_END = datetime(2025, 6, 30)
DEMO_END_ARG = DEMO_END.date().isoformat()  # the CLI's --end


def generate(n: int = 2000, seed: int = 0, dup_fraction: float = 0.25) -> list[dict[str, Any]]:
    return demo.generate(n, seed, dup_fraction, end=DEMO_END)


def write_demo(path: Path, n: int = 2000, seed: int = 0) -> int:
    return demo.write_demo(path, n, seed, end=DEMO_END)
