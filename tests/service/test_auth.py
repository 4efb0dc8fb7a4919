"""API key parsing and scopes (service/auth.py): good specs, collection-scoped keys, bad entries, short keys, and
no key in any error."""

from __future__ import annotations

import pytest

from ticketsearch.errors import TicketsearchError
from ticketsearch.service.auth import ApiKeys


def test_good_specs() -> None:
    keys = ApiKeys.parse(" reader-key-123456:read , writer-key-567890:write,,")
    assert keys.keys == (("reader-key-123456", "read", None), ("writer-key-567890", "write", None)) and keys.enabled
    assert keys.scope_of("reader-key-123456") == "read" and keys.scope_of("writer-key-567890") == "write"
    assert keys.scope_of("reader-key-1234565") is None and keys.scope_of("reader-key-123456567") is None
    assert keys.scope_of("") is None


def test_a_key_may_hold_colons_and_the_scope_is_the_last_part() -> None:
    keys = ApiKeys.parse("ab:cd:ef:gh123456:write")
    assert keys.keys == (("ab:cd:ef:gh123456", "write", None),)
    assert ApiKeys.parse("ab:cd@ef:gh123456:admin@acme-2").keys == (("ab:cd@ef:gh123456", "admin", "acme-2"),)


def test_no_keys_means_open() -> None:
    for spec in ("", " ", ",, ,"):
        keys = ApiKeys.parse(spec)
        assert keys.keys == () and not keys.enabled and keys.scope_of("anything-at-all") is None


def test_the_same_key_twice_keeps_its_widest_scope() -> None:
    for spec in ("same-key-00000001:read,same-key-00000001:write", "same-key-00000001:write,same-key-00000001:read"):
        assert ApiKeys.parse(spec).scope_of("same-key-00000001") == "write"


def test_write_implies_read_and_admin_implies_both() -> None:
    assert ApiKeys.allows("write", "write") and ApiKeys.allows("write", "read") and ApiKeys.allows("read", "read")
    assert not ApiKeys.allows("read", "write") and not ApiKeys.allows("write", "admin")
    assert ApiKeys.allows("admin", "admin") and ApiKeys.allows("admin", "write") and ApiKeys.allows("admin", "read")


def test_collection_scoped_keys_see_only_their_collections() -> None:
    keys = ApiKeys.parse("team-a-key-000001:write@acme,team-a-key-000001:read@beta,ops-key-00000001:admin,"
                         "audit-key-000001:read")
    team = keys.grants_of("team-a-key-000001")
    assert team is not None and team.sees("acme") and team.sees("beta") and not team.sees("gamma")
    assert team.allows("write", "acme") and not team.allows("write", "beta") and team.allows("read", "beta")
    assert not team.allows("admin", "acme") and not team.allows("read", None)  # no key-wide grant
    ops = keys.grants_of("ops-key-00000001")
    assert ops is not None and ops.sees("anything") and ops.allows("admin", "anything") and ops.allows("read", None)
    audit = keys.grants_of("audit-key-000001")
    assert audit is not None and audit.allows("read", "x") and not audit.allows("write", "x")
    assert keys.grants_of("team-a-key-00000") is None
    assert keys.scope_of("team-a-key-000001", "acme") == "write" and keys.scope_of("team-a-key-000001") is None


SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(("spec", "entry", "reason", "key"), [
    (f"{SECRET}", 1, "must be KEY:read, KEY:write or KEY:admin", SECRET),  # no scope
    (f"{SECRET}:owner", 1, "must be KEY:read, KEY:write or KEY:admin", SECRET),  # unknown scope
    (f"ok-key-0000000001:read,{SECRET}:Read", 2, "must be KEY:read", SECRET),  # scopes are lower case
    (f"ok-key-0000000001:read, {SECRET}:", 2, "must be KEY:read", SECRET),  # empty scope
    (":read", 1, "must be KEY:read", None),  # no key
    (f"{SECRET}:read@", 1, "optionally followed by @COLLECTION", SECRET),  # empty collection
    (f"{SECRET}:read@Acme", 1, "a collection name", SECRET),  # not a collection name
    ("short:write", 1, "at least 16 characters", "short"),
    ("ok-key-0000000001:read,123456789012345:read", 2, "at least 16 characters", "123456789012345"),
])
def test_bad_entries_name_the_entry_never_the_key(spec: str, entry: int, reason: str, key: str | None) -> None:
    with pytest.raises(TicketsearchError) as err:
        ApiKeys.parse(spec)
    message = str(err.value)
    assert f"entry {entry}" in message and reason in message, message
    assert key is None or key not in message, message
    assert "ok-key-0000000001" not in message


def test_sixteen_characters_is_enough() -> None:
    assert ApiKeys.parse("1234567890123456:read").scope_of("1234567890123456") == "read"
