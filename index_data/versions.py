"""The versioned write rule: a write that gives a ticket's version (its `updated` time: a tracker's issue
`updated`, or the API's `updated` field) is applied only over an older stored version, or where none is stored;
a write without one is always applied and leaves the stored version as it is. A deleted ticket keeps its
version, so an old delivery cannot bring it back (`index_data.store` keeps the versions; this module decides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class VersionCheck:
    keep: list[int]  # positions of the rows to write, in order
    versions: list[tuple[str, datetime]]  # the versions to store: one per accepted versioned row
    refused: list[str]  # ids whose version is not newer than the stored one, in order


def check_versions(ids: Sequence[str], given: Sequence[datetime | None],
                   stored: Mapping[str, datetime]) -> VersionCheck:
    """Which of one batch's rows (distinct `ids`, each with its given version or None) may be written over
    the `stored` versions."""
    keep: list[int] = []
    versions: list[tuple[str, datetime]] = []
    refused: list[str] = []
    for i, (tid, t) in enumerate(zip(ids, given, strict=True)):
        if t is None:
            keep.append(i)
            continue
        old = stored.get(tid)
        if old is not None and t <= old:
            refused.append(tid)
            continue
        keep.append(i)
        versions.append((tid, t))
    return VersionCheck(keep, versions, refused)
