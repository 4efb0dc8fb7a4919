"""Duplicate groups from links: the connected components of a set of pairs (union-find)."""

from __future__ import annotations

from collections.abc import Iterable


def components(nodes: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each node's group, named by one of its members; a link with an end outside `nodes` is ignored."""
    parent = {n: n for n in nodes}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in links:
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    return {k: find(k) for k in parent}


def groups(nodes: Iterable[str], links: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The components themselves, singletons included, each in the order its members came."""
    out: dict[str, list[str]] = {}
    for node, root in components(nodes, links).items():
        out.setdefault(root, []).append(node)
    return list(out.values())
