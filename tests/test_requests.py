"""The request rules every door shares (ticketsearch/requests.py): each limit just inside and just outside, the
error's field and type, and the messages the API and the CLI pass on. Torch-free and fast: these are the tests
that `scripts/mutate.py --module requests` runs against each mutant."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ticketsearch import requests as rq
from ticketsearch.errors import QueryError, RequestError
from ticketsearch.index_data.schema import FieldSpec, Schema
from ticketsearch.requests import (
    DuplicateRequest,
    SearchRequest,
    TicketIn,
    as_datetime,
    as_filters,
    checked_fields,
    explain_problem,
    id_problem,
    iso_utc,
    naive_utc,
    named_date,
    parse_datetime,
    unset_none,
    validated,
    value_problem,
)

DOTS = "an id must not be only dots ('.' and '..' are path steps, not ids)"
CONTROL = "an id must not hold control characters or start or end with whitespace"
BLANK = "must not be empty or whitespace only"


def refused(make: Callable[[], Any], field: str | None, reason: str = "", type_: str | None = None) -> RequestError:
    """`make()` raises a RequestError naming `field` (and, where given, the words and the type)."""
    with pytest.raises(RequestError) as info:
        make()
    err = info.value
    assert isinstance(err, QueryError)
    assert err.field == field, (err.field, err.reason)
    assert reason in err.reason, err.reason
    if type_ is not None:
        assert err.type == type_, err.type
    return err


def search(**data: Any) -> SearchRequest:
    return validated(SearchRequest, data)


def ticket(**over: Any) -> TicketIn:
    return validated(TicketIn, {"id": "T-1", "title": "a title", "created": "2024-01-02", **over})


# ---- ids -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tid", ["a", "A-1", "a" * 256, "a.", ".a", "a.b", ". a", "a .", "a/b#?%c d", "日本語",
                                 "...a", "a...", ".a.", "é"])
def test_ids_that_are_fine(tid: str) -> None:
    assert id_problem(tid) is None
    assert ticket(id=tid).id == tid  # the model's pattern (pydantic's regex) agrees with Python's


@pytest.mark.parametrize("tid, problem", [
    ("", "empty id"),
    ("a" * 257, "id longer than 256 characters"),
    (".", DOTS), ("..", DOTS), ("...", DOTS),
    (" a", CONTROL), ("a ", CONTROL), (" ", CONTROL), ("a\x00b", CONTROL), ("a\x1fb", CONTROL), ("a\x7fb", CONTROL),
    ("a\x9fb", CONTROL), ("a\nb", CONTROL), ("\t", CONTROL), (". ", CONTROL),
])
def test_ids_that_are_refused_say_why(tid: str, problem: str) -> None:
    assert id_problem(tid) == problem
    for make, field in ((lambda: ticket(id=tid), "id"), (lambda: ticket(duplicate_of=tid), "duplicate_of"),
                        (lambda: search(like=tid), "like")):
        err = refused(make, field)
        if problem in (DOTS, CONTROL):  # a file's words, not the pattern's regex (the API's 422 says the same)
            assert err.reason == problem, err.reason


def test_the_id_limits_are_the_documented_ones() -> None:
    assert rq.MAX_ID_LEN == rq.MAX_ID == 256
    assert ticket(id="x" * 256, duplicate_of="y" * 256).duplicate_of == "y" * 256
    refused(lambda: ticket(id="x" * 257), "id", "at most 256 characters", "string_too_long")


# ---- dates -----------------------------------------------------------------------------------------------------


def test_iso_utc_gives_the_zone_z() -> None:
    assert iso_utc(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05Z"
    assert iso_utc(datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))) == "2024-01-02T01:04:05Z"


@pytest.mark.parametrize("given, expected", [
    ("2024-01-01", datetime(2024, 1, 1)),
    ("2024-01-01T10:00:00Z", datetime(2024, 1, 1, 10)),
    (" 2024-01-01T10:00:00Z ", datetime(2024, 1, 1, 10)),
    ("2024-01-01T05:00:00-05:00", datetime(2024, 1, 1, 10)),
    ("2024-01-01T10:00:00+02:00", datetime(2024, 1, 1, 8)),
    (datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 10)),
    (datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=-1))), datetime(2024, 1, 1, 11)),
])
def test_parse_datetime_reads_iso_8601_to_naive_utc(given: Any, expected: datetime) -> None:
    got = parse_datetime(given)
    assert got == expected and got.tzinfo is None


@pytest.mark.parametrize("given", ["yesterday", "01/02/2024", "", "   ", "Z", 20240101, None, 1.5])
def test_parse_datetime_refuses_what_is_not_iso_8601(given: Any) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 date") as info:
        parse_datetime(given)
    assert repr(given) in str(info.value)


def test_naive_utc_drops_the_offset_only_where_utc_would_overflow() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert naive_utc(datetime(2024, 1, 1, 12)) == datetime(2024, 1, 1, 12)
    assert naive_utc(datetime(2024, 1, 1, 12, tzinfo=plus2)) == datetime(2024, 1, 1, 10)
    low = naive_utc(datetime(1, 1, 1, 1, tzinfo=plus2))  # 0001-01-01 01:00+02:00 is before year 1 in UTC
    assert low == datetime(1, 1, 1, 1) and low.tzinfo is None
    high = naive_utc(datetime.max.replace(tzinfo=timezone(timedelta(hours=-2))))
    assert high == datetime.max and high.tzinfo is None


def test_now_is_naive_utc_to_the_hour() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    got = rq.now()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert got.tzinfo is None
    assert (got.minute, got.second, got.microsecond) == (0, 0, 0)
    assert before.replace(minute=0, second=0, microsecond=0) <= got <= after


def test_a_named_date_names_its_field() -> None:
    assert named_date("2024-03-01T00:00:00+01:00", "before") == datetime(2024, 2, 29, 23)
    err = refused(lambda: named_date("soon", "after"), "after", "not an ISO-8601 date: 'soon'")
    assert str(err) == "after: not an ISO-8601 date: 'soon'"
    assert err.__cause__ is None and err.__suppress_context__
    assert as_datetime(None, "before") is None
    assert as_datetime("2024-03-01", "before") == datetime(2024, 3, 1)
    refused(lambda: as_datetime("soon", "created"), "created", "not an ISO-8601 date")


# ---- a search ----------------------------------------------------------------------------------------------------


def test_a_search_has_its_defaults() -> None:
    r = SearchRequest.of("printer on fire")
    assert (r.text, r.like, r.title, r.k, r.explain, r.method, r.rerank, r.snippets) == (
        "printer on fire", None, None, 10, False, None, True, False)
    assert r.fields == {} and r.filters == {} and r.created_before is None and r.created_after is None
    assert not r.costly()


@pytest.mark.parametrize("k", [1, 2, 99, 100])
def test_k_inside_the_limit(k: int) -> None:
    assert search(text="x", k=k).k == k
    assert DuplicateRequest.of({"title": "t"}, k=k).k == k


@pytest.mark.parametrize("k, type_", [(0, "greater_than_equal"), (-1, "greater_than_equal"),
                                      (101, "less_than_equal")])
def test_k_outside_the_limit(k: int, type_: str) -> None:
    refused(lambda: search(text="x", k=k), "k", type_=type_)
    refused(lambda: DuplicateRequest.of({"title": "t"}, k=k), "k", type_=type_)


def test_the_search_limits() -> None:
    assert (rq.MAX_QUERY, rq.MAX_TITLE, rq.MAX_K, rq.MAX_FIELDS, rq.MAX_VALUES) == (200_000, 2_000, 100, 64, 100)
    assert search(text="x" * 200_000, title="t" * 2_000).title == "t" * 2_000
    refused(lambda: search(text="x" * 200_001), "text", "at most 200000 characters", "string_too_long")
    refused(lambda: search(text="x", title="t" * 2_001), "title", "at most 2000 characters", "string_too_long")


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\x00", " \x7f "])
def test_a_blank_text_says_so(text: str) -> None:
    refused(lambda: search(text=text), "text", BLANK, "string_pattern_mismatch")
    refused(lambda: DuplicateRequest.of({"title": text}), "title", BLANK)
    refused(lambda: ticket(title=text), "title", BLANK)


def test_text_or_like_and_never_null() -> None:
    assert search(like="T-1").like == "T-1" and search(like="T-1").text is None
    refused(lambda: search(), None, "give a query text, or like (an indexed ticket's id)")
    refused(lambda: search(title="only a title"), None, "give a query text, or like")
    both = "give either a query text or like (an indexed ticket's id), not both"
    refused(lambda: search(text="x", like="T-1"), None, both)
    refused(lambda: search(title="x", like="T-1"), None, both)
    refused(lambda: search(text=None), "text", "must be a string (leave it out instead of null)")
    refused(lambda: search(like=None, text="x"), "like", "must be a string (leave it out instead of null)")
    assert search(text="x", title=None).title is None  # a title may be null


@pytest.mark.parametrize("title, kept", [(None, None), ("", None), ("   ", None), (" Crash ", "Crash"),
                                         ("Crash", "Crash")])
def test_a_search_title_is_stripped_and_blank_is_none(title: str | None, kept: str | None) -> None:
    assert search(text="x", title=title).title == kept


def test_explain_covers_at_most_20_hits() -> None:
    assert rq.MAX_EXPLAINED == 20
    assert explain_problem(20) is None and explain_problem(1) is None
    assert explain_problem(21) == "explain covers at most 20 hits: ask k <= 20 with explain (k is 21)"
    assert search(text="x", explain=True, k=20).explain is True
    refused(lambda: search(text="x", explain=True, k=21), None, "explain covers at most 20 hits")
    assert search(text="x", explain=False, k=100).k == 100


@pytest.mark.parametrize("name", ["explain", "rerank", "snippets"])
@pytest.mark.parametrize("value", [1, 0, "yes", "true", None])
def test_switches_are_strict_booleans(name: str, value: Any) -> None:
    refused(lambda: search(text="x", **{name: value}), name, type_="bool_type")


def test_methods() -> None:
    assert rq.METHODS == ("hybrid", "dense", "bm25", "title")
    for m in rq.METHODS:
        assert search(text="x", method=m).method == m
    refused(lambda: search(text="x", method="fuzzy"), "method", type_="literal_error")


def test_unknown_options_are_refused_not_dropped() -> None:
    refused(lambda: search(text="x", colour="red"), "colour", "Extra inputs are not permitted", "extra_forbidden")
    refused(lambda: DuplicateRequest.of({"title": "t", "colour": "red"}), "colour", type_="extra_forbidden")
    refused(lambda: ticket(colour="red"), "colour", type_="extra_forbidden")


def test_dates_of_a_search() -> None:
    r = search(text="x", created_before="2024-01-01T10:00:00+02:00", created_after=datetime(2023, 1, 1, tzinfo=UTC))
    assert r.created_before == datetime(2024, 1, 1, 8) and r.created_after == datetime(2023, 1, 1)
    assert r.created_before.tzinfo is None and r.created_after.tzinfo is None
    refused(lambda: search(text="x", created_before=20240101), "created_before",
            "must be an ISO-8601 date-time string, not int")
    refused(lambda: search(text="x", created_after="last week"), "created_after",
            "not an ISO-8601 date: 'last week'")


def test_field_and_filter_counts_and_names() -> None:
    many = {f"f{i}": "v" for i in range(64)}
    assert len(search(text="x", fields=many, filters=many).filters) == 64
    too_many = {**many, "f64": "v"}
    refused(lambda: search(text="x", fields=too_many), "fields", "at most 64 items", "too_long")
    refused(lambda: search(text="x", filters=too_many), "filters", "at most 64 items", "too_long")
    refused(lambda: DuplicateRequest.of({"title": "t", "fields": too_many}), "fields", type_="too_long")
    refused(lambda: ticket(fields=too_many), "fields", type_="too_long")
    assert search(text="x", fields={"n" * 64: 1}).fields == {"n" * 64: 1}
    refused(lambda: search(text="x", fields={"n" * 65: 1}), f"fields.{'n' * 65}.[key]", type_="string_too_long")
    refused(lambda: search(text="x", filters={"": 1}), "filters..[key]", type_="string_too_short")


@pytest.mark.parametrize("value, kept", [
    ("a", "a"), (3, 3), (2.5, 2.5), (None, None), ([], []), (["a", 1, 2.5], ["a", 1, 2.5]),
    (("a", "b"), ["a", "b"]), ({"a"}, ["a"]), ("t" * 2_000, "t" * 2_000), (["v"] * 100, ["v"] * 100),
    (datetime(2024, 1, 2, 3), "2024-01-02T03:00:00"),
])
def test_a_field_value_that_is_fine(value: Any, kept: Any) -> None:
    assert search(text="x", fields={"f": value}).fields == {"f": kept}
    assert search(text="x", filters={"f": value}).filters == {"f": kept}


@pytest.mark.parametrize("value, reason", [
    (True, "must be a string, a number or a list of them, not bool"),
    ({"a": 1}, "must be a string, a number or a list of them, not dict"),
    ([["a"]], "not list"), (["a", None], "not NoneType"), ([False], "not bool"),
    (float("nan"), "NaN and Infinity are not allowed"), (float("inf"), "NaN and Infinity are not allowed"),
    ([1.0, float("-inf")], "NaN and Infinity are not allowed"),
    ("t" * 2_001, "a value is longer than 2000 characters"), (["t" * 2_001], "a value is longer than 2000"),
    (["v"] * 101, "at most 100 values"), (("v",) * 101, "at most 100 values"),
])
def test_a_field_value_that_is_refused(value: Any, reason: str) -> None:
    refused(lambda: search(text="x", fields={"product": value}), "fields.product", reason, "value_error")
    refused(lambda: search(text="x", filters={"product": value}), "filters.product", reason)
    refused(lambda: DuplicateRequest.of({"title": "t", "fields": {"product": value}}), "fields.product", reason)


def test_a_message_has_no_value_error_prefix() -> None:
    err = refused(lambda: search(text="x", fields={"p": True}), "fields.p")
    assert err.reason == "must be a string, a number or a list of them, not bool"
    assert str(err) == "fields.p: must be a string, a number or a list of them, not bool"
    assert rq.error_message({"type": "value_error", "msg": "Value error, broken"}) == "broken"
    assert rq.error_message({"type": "x"}) == "invalid"
    assert rq.error_message({"type": "string_pattern_mismatch", "msg": "m", "ctx": {"pattern": "[a-z]"}}) == "m"
    assert rq.error_message({"type": "string_pattern_mismatch", "msg": "m", "ctx": {"pattern": rq.NOT_BLANK}}) == BLANK
    assert rq.error_message({"type": "value_error", "msg": "m", "ctx": {"pattern": rq.NOT_BLANK}}) == "m"


def test_the_first_broken_rule_is_named() -> None:
    """Several broken rules: the error names the first (in the order of the model's fields), as the API's 422 and
    the CLI's one line say it."""
    refused(lambda: search(text=" ", k=0, explain="yes"), "text", BLANK)
    refused(lambda: search(text="x", k=0, explain="yes"), "k", type_="greater_than_equal")
    refused(lambda: ticket(id="..", title=" ", created="soon"), "id")
    refused(lambda: ticket(title=" ", created="soon"), "title", BLANK)


@pytest.mark.parametrize("text, title, snippets, k, explain, costly", [
    ("x" * 10_000, None, False, 10, False, False),
    ("x" * 10_001, None, False, 10, False, True),
    ("x" * 5_000, "t" * 1_000, False, 10, False, False),
    ("x" * 9_000, "t" * 1_001, False, 10, False, True),  # the text and the title together
    ("x", None, True, 1, False, False),  # snippets of a few hits are ordinary
    ("x", None, True, 19, False, False),
    ("x", None, True, 20, False, False),
    ("x", None, True, 21, False, True),
    ("x", None, False, 100, False, False),  # many hits without snippets are ordinary
    ("x", None, False, 1, True, True),
    ("x", None, True, 1, True, True),
])
def test_what_a_costly_search_is(text: str, title: str | None, snippets: bool, k: int, explain: bool,
                                 costly: bool) -> None:
    assert (rq.COSTLY_TEXT, rq.COSTLY_SNIPPETS) == (10_000, 20)
    r = search(text=text, title=title, snippets=snippets, k=k, explain=explain)
    assert r.costly() is costly


def test_a_search_like_a_ticket_costs_as_that_tickets_text() -> None:
    r = search(like="T-1", k=20)
    assert not r.costly() and not r.costly(like_chars=10_000) and r.costly(like_chars=10_001)
    assert not search(text="short", k=5).costly(like_chars=50_000)  # only a like search reads a ticket's text
    assert search(like="T-1", explain=True, k=5).costly()


def test_search_of_is_the_library_spelling() -> None:
    r = SearchRequest.of("crash", before="2024-01-02", after="2023-01-02", k=None, method=None, filters={"p": "a"})
    assert r.created_before == datetime(2024, 1, 2) and r.created_after == datetime(2023, 1, 2)
    assert r.k == 10 and r.method is None and r.model_fields_set == {"text", "created_before", "created_after",
                                                                    "filters"}
    assert SearchRequest.of(r) is r  # a built request passes through
    assert SearchRequest.of(r, k=None) is r  # None is unset
    again = SearchRequest.of(r, k=3)
    assert again is not r and again.k == 3 and again.text == "crash" and again.created_before == r.created_before
    assert r.k == 10  # the built one is left as it was
    assert SearchRequest.of(None, like="T-9").like == "T-9"
    liked = SearchRequest.of(SearchRequest.of(like="T-9"), k=4)
    assert liked.like == "T-9" and liked.text is None and liked.k == 4
    refused(lambda: SearchRequest.of(r, like="T-9"), None, "not both")
    refused(lambda: SearchRequest.of("crash", k=0), "k")
    refused(lambda: SearchRequest.of(None), None, "give a query text")


def test_filters_as_lists() -> None:
    r = search(text="x", filters={"a": "x", "b": ["y", "z"], "c": ("p",), "d": 3})
    assert r.filter_lists() == {"a": ["x"], "b": ["y", "z"], "c": ["p"], "d": [3]}
    assert as_filters({"s": {"q"}, "t": ("u", "v"), "w": None}) == {"s": ["q"], "t": ["u", "v"], "w": [None]}
    assert as_filters(None) == {} and as_filters({}) == {}
    assert unset_none({"a": None, "b": 0, "c": "", "d": False}) == {"b": 0, "c": "", "d": False}


def test_the_json_schema_states_the_limits() -> None:
    s = SearchRequest.model_json_schema()
    assert s["properties"]["k"]["maximum"] == 100 and s["properties"]["k"]["minimum"] == 1
    assert s["if"] == {"required": ["explain"], "properties": {"explain": {"const": True}}}  # only when explained
    assert s["then"] == {"properties": {"k": {"maximum": 20}}}
    assert s["properties"]["text"]["maxLength"] == 200_000
    assert len(s["oneOf"]) == 2
    fields = s["properties"]["fields"]
    assert fields["maxProperties"] == 64


# ---- a duplicate check --------------------------------------------------------------------------------------------


def test_a_duplicate_check_has_its_limits() -> None:
    d = DuplicateRequest.of({"title": "t" * 2_000, "body": "b" * 200_000})  # a ticket's body, as ingest takes
    assert d.search().text == "b" * 200_000  # and the search it runs takes it whole
    assert (d.k, d.snippets, d.created, d.fields) == (5, False, None, {})
    refused(lambda: DuplicateRequest.of({"title": "t" * 2_001}), "title", "at most 2000 characters")
    refused(lambda: DuplicateRequest.of({"title": "t", "body": "b" * 200_001}), "body", "at most 200000 characters")
    refused(lambda: DuplicateRequest.of({"body": "b"}), "title", "Field required", "missing")
    refused(lambda: DuplicateRequest.of({"title": "t", "created": 5}), "created", "not int")
    refused(lambda: DuplicateRequest.of({"title": "t", "snippets": 1}), "snippets", type_="bool_type")


def test_duplicate_of_takes_options_and_drops_none() -> None:
    d = DuplicateRequest.of({"title": "t", "body": None, "created": None}, k=None, snippets=True)
    assert d.body == "" and d.created is None and d.k == 5 and d.snippets is True
    again = DuplicateRequest.of(d, k=7)
    assert again.k == 7 and again.snippets is True and again.title == "t"
    assert DuplicateRequest.of(d).model_fields_set == {"title", "snippets"}


def test_the_search_of_a_duplicate_check() -> None:
    d = DuplicateRequest.of({"title": " Crash ", "body": "  stack trace  ", "created": "2024-01-02T00:00:00+01:00",
                             "fields": {"product": "SSO"}}, k=7, snippets=True)
    s = d.search()
    assert (s.text, s.title, s.created_before, s.k, s.snippets, s.fields) == (
        "stack trace", "Crash", datetime(2024, 1, 1, 23), 7, True, {"product": "SSO"})
    alone = DuplicateRequest.of({"title": " Crash ", "body": "   "}).search()
    assert (alone.text, alone.title, alone.k, alone.created_before) == ("Crash", None, 5, None)
    for blank in ("\x00\x01", " \x7f\t\x9f ", "\x1b\n"):  # ingest takes such a body: so does the check
        unseen = DuplicateRequest.of({"title": " Crash ", "body": blank}).search()
        assert (unseen.text, unseen.title) == ("Crash", None), repr(blank)


def test_a_costly_duplicate_check_is_its_search() -> None:
    assert not DuplicateRequest.of({"title": "t", "body": "b" * 9_999}).costly()  # 10,000 with the title
    assert DuplicateRequest.of({"title": "t", "body": "b" * 10_000}).costly()
    assert DuplicateRequest.of({"title": "t" * 1_000, "body": "b" * 9_001}).costly()  # the title counts beside it
    assert not DuplicateRequest.of({"title": "t" * 2_000}).costly()
    assert DuplicateRequest.of({"title": "t"}, k=21, snippets=True).costly()
    assert not DuplicateRequest.of({"title": "t"}, k=20, snippets=True).costly()


# ---- an incoming ticket -------------------------------------------------------------------------------------------


def test_a_ticket_has_its_limits() -> None:
    assert rq.MAX_BODY == 200_000 and rq.MAX_BATCH == 1000
    t = ticket(body="b" * 200_000, updated="2024-01-03T00:00:00Z", duplicate_of="T-0")
    assert len(t.body) == 200_000 and t.created == datetime(2024, 1, 2) and t.updated == datetime(2024, 1, 3)
    assert ticket().body == "" and ticket().updated is None and ticket().duplicate_of is None
    refused(lambda: ticket(body="b" * 200_001), "body", "at most 200000 characters", "string_too_long")
    refused(lambda: ticket(title="t" * 2_001), "title", "at most 2000 characters")
    refused(lambda: validated(TicketIn, {"id": "T-1", "title": "t"}), "created", "Field required", "missing")
    refused(lambda: validated(TicketIn, {"title": "t", "created": "2024-01-02"}), "id", "Field required")
    refused(lambda: ticket(created="tomorrow"), "created", "not an ISO-8601 date: 'tomorrow'")
    refused(lambda: ticket(updated=1), "updated", "not int")


@pytest.mark.parametrize("value, kept", [
    ("v" * 100_000, "v" * 100_000), (None, None), (3, 3), (1.5, 1.5), ([], []), (["a", 2], ["a", 2]),
    (("a", "b"), ["a", "b"]), ({"a"}, ["a"]), (["v"] * 100, ["v"] * 100),
])
def test_a_ticket_field_that_is_kept(value: Any, kept: Any) -> None:
    assert ticket(fields={"status": value}).fields == {"status": kept}


@pytest.mark.parametrize("value, reason", [
    ("v" * 100_001, "a value is longer than 100000 characters"), (["v" * 100_001], "longer than 100000"),
    (["v"] * 101, "at most 100 values"), (("v",) * 101, "at most 100 values"),
    ([None], "not NoneType"), (True, "not bool"), ({"a": 1}, "not dict"), ([[1]], "not list"),
    (float("nan"), "NaN and Infinity are not allowed"),
])
def test_a_ticket_field_that_is_refused(value: Any, reason: str) -> None:
    refused(lambda: ticket(fields={"status": value}), "fields.status", reason, "value_error")


# ---- the one rule for a query's fields and filters ---------------------------------------------------------------

# read from TOML, as a schema file is: its strings are not the interned literals of this file (`kind is "multi"`
# would hold for literals, never for a schema read from a file)
SCHEMA = Schema.from_dict(tomllib.loads("""
name = "t"
[[fields]]
name = "product"
kind = "categorical"
[[fields]]
name = "tags"
kind = "multi"
[[fields]]
name = "count"
kind = "numeric"
transform = "log1p"
[[fields]]
name = "score"
kind = "numeric"
[[fields]]
name = "due"
kind = "date"
"""))


def spec(name: str) -> FieldSpec:
    return SCHEMA.field(name)


def test_checked_fields_names_the_unknown_field() -> None:
    err = refused(lambda: checked_fields(SCHEMA, {"zeta": 1, "alpha": 2, "product": "a"}, "filters", True),
                  "filters.alpha", type_="unknown_field")
    assert err.reason == "unknown field 'alpha'; allowed: product, tags, count, score, due"
    empty = Schema(name="e", text_fields=("title",))
    err = refused(lambda: checked_fields(empty, {"x": 1}, "fields"), "fields.x", type_="unknown_field")
    assert err.reason == "unknown field 'x'; allowed: (none)"


def test_checked_fields_keeps_values_and_drops_null() -> None:
    given = {"product": "a", "tags": ["x"], "count": 0, "score": -2.5, "due": "2024-01-01", "product2": None}
    assert checked_fields(SCHEMA, {k: v for k, v in given.items() if k != "product2"}, "fields") == {
        "product": "a", "tags": ["x"], "count": 0, "score": -2.5, "due": "2024-01-01"}
    assert checked_fields(SCHEMA, {"product": None, "score": 1}, "fields") == {"score": 1}
    assert checked_fields(SCHEMA, {}, "filters", True) == {}
    refused(lambda: checked_fields(SCHEMA, {"product": None}, "filters", True), "filters.product",
            "a filter value must not be null", "value_error")
    refused(lambda: checked_fields(SCHEMA, {"product": "a", "count": -1}, "fields"), "fields.count",
            "must be at least 0")
    refused(lambda: checked_fields(SCHEMA, {"product": "a", "tags": "x"}, "fields"), "fields.tags",
            "must be a list of strings")


@pytest.mark.parametrize("name, value, is_filter", [
    ("product", "a", False), ("product", 3, False), ("product", 2.5, False), ("product", "t" * 2_000, False),
    ("product", ["a", 3], True), ("product", "a", True), ("product", None, False),
    ("tags", ["a", "b"], False), ("tags", [], False), ("tags", "a", True), ("tags", ["a", "b"], True),
    ("count", 0, False), ("count", 0.0, False), ("count", 5, True), ("count", [0, 1], True),
    ("score", -3, False), ("score", -0.5, True),
    ("due", "2024-01-01", False), ("due", "2024-01-01T00:00:00Z", True), ("due", ["2024-01-01"], True),
])
def test_values_that_fit_their_field(name: str, value: Any, is_filter: bool) -> None:
    assert value_problem(spec(name), value, is_filter) is None


@pytest.mark.parametrize("name, value, is_filter, problem", [
    ("product", None, True, "a filter value must not be null"),
    ("product", [], True, "needs at least one value"),
    ("tags", [], True, "needs at least one value"),
    ("tags", "a", False, "must be a list of strings"),
    ("tags", 3, False, "must be a list of strings"),
    ("product", [["a"]], True, "takes a value or a list of values, not nested lists"),
    ("product", ["a"], False, "takes a single value, not a list"),
    ("score", [1], False, "takes a single value, not a list"),
    ("tags", [["a"]], False, "takes a single value, not a list"),
    ("tags", ["a", 3], False, "values must be strings"),
    ("tags", 3, True, "values must be strings"),
    ("product", "t" * 2_001, False, "a value is longer than 2000 characters"),
    ("product", ["a", "t" * 2_001], True, "a value is longer than 2000 characters"),
    ("tags", ["t" * 2_001], False, "a value is longer than 2000 characters"),
    ("product", {"a": 1}, False, "must be a string or a number"),
    ("product", [{"a": 1}], True, "must be a string or a number"),
    ("count", "3", False, "must be a number"),
    ("score", {"a": 1}, False, "must be a number"),  # each kind says its own type
    ("score", [[1]], True, "takes a value or a list of values, not nested lists"),
    ("due", {"a": 1}, False, "must be an ISO-8601 date-time string"),
    ("due", [1.5], True, "must be an ISO-8601 date-time string"),
    ("score", "3", True, "must be a number"),
    ("score", ["3"], True, "must be a number"),
    ("count", -1, False, "must be at least 0"),
    ("count", -0.001, True, "must be at least 0"),
    ("count", [1, -1], True, "must be at least 0"),
    ("due", 20240101, False, "must be an ISO-8601 date-time string"),
    ("due", "soon", False, "not an ISO-8601 date: 'soon'"),
    ("due", ["2024-01-01", "soon"], True, "not an ISO-8601 date: 'soon'"),
])
def test_values_that_do_not_fit_their_field(name: str, value: Any, is_filter: bool, problem: str) -> None:
    assert value_problem(spec(name), value, is_filter) == problem


def test_a_request_error_crosses_processes() -> None:
    """Rebuilt through its `__reduce__`, as Ray rebuilds it in another process (`copy` uses the same hook)."""
    import copy

    err = refused(lambda: search(text="x", k=0), "k")
    back = copy.deepcopy(err)
    assert (back.reason, back.field, back.type) == (err.reason, "k", "greater_than_equal")
