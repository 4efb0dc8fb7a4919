"""Tracker webhooks: who sent them. Hook routes are authenticated by the tracker's signature or token, never by
an API key (trackers cannot send ours), with the collection's secret from `TICKETSEARCH_WEBHOOK_SECRETS`
("COLLECTION=SECRET,..."; never taken from the payload, never logged).

- GitHub: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the raw body with the secret.
- Jira: the same HMAC in `X-Hub-Signature` (Jira's webhooks with a secret), or the secret itself in
  `X-Webhook-Token` (a header, so that it never lands in an access log the way a query string would).

Every comparison is constant-time. A collection without a secret, or one that does not exist, refuses every
call with the same 401 as a wrong signature, so the hook routes tell no one which collections exist.
"""

from __future__ import annotations

import hashlib
import hmac

from ticketsearch.errors import TicketsearchError


def parse_secrets(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, item in enumerate(p.strip() for p in spec.split(",")):
        if not item:
            continue
        name, sep, secret = item.partition("=")
        if not sep or not name.strip() or len(secret) < 8:
            # never echo the secret: say which entry is wrong
            raise TicketsearchError(f"TICKETSEARCH_WEBHOOK_SECRETS entry {n + 1} must be COLLECTION=SECRET, "
                                    "with a secret of at least 8 characters")
        out[name.strip()] = secret
    return out


def hmac_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def github_ok(secret: str | None, body: bytes, signature: str | None) -> bool:
    return secret is not None and hmac_ok(secret, body, signature)


def jira_ok(secret: str | None, body: bytes, signature: str | None, token: str | None) -> bool:
    if secret is None:
        return False
    if signature:
        return hmac_ok(secret, body, signature)
    return token is not None and hmac.compare_digest(secret.encode(), token.strip().encode())
