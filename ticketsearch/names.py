"""Names from outside that become a folder, a file or a column: a collection's name (its folder), a schema
field's name (a column of the ticket store) and a job's id (its record's file). One rule each, for every door
(the library, the CLI, the API's path and body schemas, the key list of `TICKETSEARCH_API_KEYS`).

A name is checked whole (`fullmatch`): with `re.match` a pattern's `$` also matches before a final newline, so
'abc\\n' passed the library while the API (pydantic's regex) refused it. Ticket ids are data, not names: their
rule is `ticketsearch.requests.ID_PATTERN`.
"""

from __future__ import annotations

import re
import secrets

from ticketsearch.errors import QueryError

NAME_MAX = 63
MAX_FIELDS = 64  # fields of one ticket or query, and of one schema
MAX_FIELD_NAME = 64  # a key of a ticket's `fields`: a schema field's name or source column, or a kept column
COLLECTION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # the API's path parameter gives the same pattern
FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
JOB_ID_BYTES = 8
JOB_ID_PATTERN = r"^[a-f0-9]{16}$"
_COLLECTION, _FIELD, _JOB_ID = re.compile(COLLECTION_PATTERN), re.compile(FIELD_PATTERN), re.compile(JOB_ID_PATTERN)


def is_collection_name(name: object) -> bool:
    return isinstance(name, str) and _COLLECTION.fullmatch(name) is not None


def check_collection_name(name: str) -> str:
    """`name`, or QueryError naming the rule."""
    if not is_collection_name(name):
        raise QueryError(f"collection name {str(name)[:80]!r} must be 1-{NAME_MAX} characters of a-z, 0-9, '_' "
                         "and '-', starting with a letter or digit")
    return name


def is_field_name(name: object) -> bool:
    """A schema field's name: a column of the ticket store, so a lower-case identifier."""
    return isinstance(name, str) and _FIELD.fullmatch(name) is not None


def new_job_id() -> str:
    return secrets.token_hex(JOB_ID_BYTES)


def is_job_id(job_id: object) -> bool:
    """What `new_job_id` gives, and nothing else reaches a job's file."""
    return isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) is not None
