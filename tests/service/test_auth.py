"""API key parsing and scopes (service/auth.py): good specs, bad entries, short keys, and no key in any error."""

from __future__ import annotations

import pytest

from ticketsearch.errors import TicketsearchError
from ticketsearch.service.auth import ApiKeys


def test_good_specs() -> None:
    keys = ApiKeys.parse(" reader-key-1234:read , writer-key-5678:write,,")
    assert keys.keys == (("reader-key-1234", "read"), ("writer-key-5678", "write")) and keys.enabled
    assert keys.scope_of("reader-key-1234") == "read" and keys.scope_of("writer-key-5678") == "write"
    assert keys.scope_of("reader-key-123") is None and keys.scope_of("reader-key-12345") is None
    assert keys.scope_of("") is None


def test_a_key_may_hold_colons_and_the_scope_is_the_last_part() -> None:
    keys = ApiKeys.parse("ab:cd:ef:gh1234:write")
    assert keys.keys == (("ab:cd:ef:gh1234", "write"),)


def test_no_keys_means_open() -> None:
    for spec in ("", " ", ",, ,"):
        keys = ApiKeys.parse(spec)
        assert keys.keys == () and not keys.enabled and keys.scope_of("anything-at-all") is None


def test_the_same_key_twice_keeps_its_widest_scope() -> None:
    for spec in ("same-key-0001:read,same-key-0001:write", "same-key-0001:write,same-key-0001:read"):
        assert ApiKeys.parse(spec).scope_of("same-key-0001") == "write"


def test_write_implies_read() -> None:
    assert ApiKeys.allows("write", "write") and ApiKeys.allows("write", "read") and ApiKeys.allows("read", "read")
    assert not ApiKeys.allows("read", "write")


SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(("spec", "entry", "reason", "key"), [
    (f"{SECRET}", 1, "must be KEY:read or KEY:write", SECRET),  # no scope
    (f"{SECRET}:admin", 1, "must be KEY:read or KEY:write", SECRET),  # unknown scope
    (f"ok-key-000001:read,{SECRET}:Read", 2, "must be KEY:read or KEY:write", SECRET),  # scopes are lower case
    (f"ok-key-000001:read, {SECRET}:", 2, "must be KEY:read or KEY:write", SECRET),  # empty scope
    (":read", 1, "must be KEY:read or KEY:write", None),  # no key
    ("short:write", 1, "at least 8 characters", "short"),
    ("ok-key-000001:read,1234567:read", 2, "at least 8 characters", "1234567"),
])
def test_bad_entries_name_the_entry_never_the_key(spec: str, entry: int, reason: str, key: str | None) -> None:
    with pytest.raises(TicketsearchError) as err:
        ApiKeys.parse(spec)
    message = str(err.value)
    assert f"entry {entry}" in message and reason in message, message
    assert key is None or key not in message, message
    assert "ok-key-000001" not in message


def test_eight_characters_is_enough() -> None:
    assert ApiKeys.parse("12345678:read").scope_of("12345678") == "read"
