"""The HTTP service's settings (`ticketsearch serve`): address, keys, webhook secrets, admission, and how many
collections it holds open. Read from the same TICKETSEARCH_* environment variables as the index's settings
(`ticketsearch.settings`), which they do not include: the layers below the service never see keys or secrets."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticketsearch.requests import COSTLY_KINDS, MAX_BODY, MAX_TITLE

# A ticket every door takes (MAX_TITLE + MAX_BODY characters) must fit one request body however a client's JSON
# writes it: at worst 12 bytes a character (one outside the BMP as an escaped surrogate pair, "\\ud83d\\ude00"),
# 2.4 MB; with room for its fields, 4 MiB (a 1 MiB limit refused a legal ticket that a client sent ASCII-escaped).
DEFAULT_MAX_BODY_BYTES = 4 << 20
assert DEFAULT_MAX_BODY_BYTES >= 12 * (MAX_TITLE + MAX_BODY) + (1 << 20)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETSEARCH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = Field(
        default="", repr=False,
        description="Comma-separated KEY:SCOPE[@COLLECTION] entries, SCOPE read, write (implies read) or admin "
        "(create, delete and train collections, and everything else); without @COLLECTION a key applies to every "
        "collection. Empty = open, local only.",
    )
    webhook_secrets: str = Field(
        default="", repr=False,
        description="Comma-separated COLLECTION=SECRET pairs: the secret each collection's tracker webhooks are "
        "signed with (GitHub, Jira) or send as their token. A collection without one refuses its hooks.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1024, description="Larger request bodies get 413 (default 4 MiB: one "
        "ticket of the longest title and body fits however its JSON escapes them).")
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=600,
        description="A request body not received in full within this many seconds gets 408 (it holds no slot "
        "meanwhile: admission comes after the body).")
    workers: int = Field(default=4, ge=1, le=64, description="Requests doing model or index work at once.")
    max_pending: int = Field(
        default=64, ge=1, description="Admitted requests (running or waiting); beyond it the service answers 503."
    )
    retry_after_s: int = Field(default=1, ge=1, le=3600)
    costly_per_key: int = Field(
        default=1, ge=1, le=64,
        description=f"Costly searches ({COSTLY_KINDS}) one "
        "key may have in progress; more get 429 with Retry-After.")
    costly_total: int = Field(
        default=1, ge=1, le=64,
        description="Costly searches in progress in the whole service (keep it below `workers`, so that ordinary "
        "searches always find a worker); more get 429.")
    max_open_collections: int = Field(
        default=20, ge=1, le=10_000,
        description="Collections held open at once (`serve --root`); opening one more first closes the least "
        "recently used idle one, after its checkpoint.",
    )
    collection_idle_s: float = Field(
        default=300.0, gt=0, description="A collection unused this long is closed (it reopens on its next request)."
    )
    training_jobs: int = Field(
        default=1, ge=1, le=16, description="Training jobs run at once (others wait, queued); one per collection."
    )


@lru_cache(maxsize=1)
def get_service_settings() -> ServiceSettings:
    return ServiceSettings()
