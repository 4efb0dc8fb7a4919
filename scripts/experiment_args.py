"""What every script over an experiment's index shares: its arguments (the index, the output, the split dates),
and the index opened with its lists mined as `ticketsearch experiment` mines them."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.mining import Mined, build_train_data, mine
from ticketsearch.pipeline.parts import index_settings
from ticketsearch.rerank.train import TrainData
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, load_eval_inputs
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.settings import Settings, get_settings


def experiment_index_parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    ap.add_argument("--index", type=Path, required=True, help="an index `ticketsearch experiment` built")
    ap.add_argument("--out", type=Path, required=True, help="write the JSON here")
    ap.add_argument("--train-before", default="2015-01-01")
    ap.add_argument("--test-since", default="2016-01-01")
    return ap


@dataclass
class MinedIndex:
    manifest: Manifest
    settings: Settings
    store: TicketStore
    encoder: Encoder
    inp: EvalInputs
    mined: Mined
    base: TrainData  # every list's pair inputs (with the code columns when asked)
    fs: FeatureSpace


@contextmanager
def mined_index(args: Any, code: bool = False, progress: bool = False, tokens: bool = True,
                text: bool = False) -> Iterator[MinedIndex]:
    """`args.index` open, its train / validation / test lists mined at `args.train_before` / `args.test_since`
    with the index's fusion, and their training data with the pair inputs (`code`: and the code columns; `text`:
    and the text columns; `tokens` False: no token states, for scripts that train only linear models)."""
    manifest = Manifest.load(args.index)
    settings = index_settings(manifest, get_settings())
    with TicketStore(IndexDir(args.index).store_path) as store:
        encoder = Encoder(manifest.model, settings=settings)
        inp = load_eval_inputs(args.index, store, encoder)
        mined = mine(store, inp, manifest.fusion, settings.fusion_depth, parse_datetime(args.train_before),
                     parse_datetime(args.test_since))
        base, fs, _ = build_train_data(store, inp, encoder, args.index, mined, with_pair=True, progress=progress,
                                       code=code, tokens=tokens, text=text)
        yield MinedIndex(manifest, settings, store, encoder, inp, mined, base, fs)
