#!/usr/bin/env bash
# The last step of `make demo`: print working curl lines, then run the service in the foreground.
set -euo pipefail
BIN="$1"; INDEX="$2"; PORT="${3:-8000}"
URL="http://127.0.0.1:${PORT}"
cat <<MSG

The query service is starting on ${URL} (API docs: ${URL}/docs). Press Ctrl-C to stop it.
It is open to this machine only (no TICKETSEARCH_API_KEYS set).

The agent page:  ${URL}/
  deep links:    ${URL}/?q=charged+twice+for+the+subscription   ${URL}/?like=SUP-1900   ${URL}/tickets/SUP-1900

Try, from another terminal:

  curl -s ${URL}/readyz
  curl -s -X POST ${URL}/v1/search -H 'Content-Type: application/json' -d '{"text": "customers were charged twice for their subscription", "k": 3}'
  curl -s ${URL}/v1/tickets/SUP-1900/similar?k=3
  curl -s -X POST ${URL}/v1/duplicates -H 'Content-Type: application/json' -d '{"title": "Double payment taken from our card", "body": "We were billed twice this month. Error reference ERR-4821.", "fields": {"product": "Billing Portal"}}'
  curl -s -X POST ${URL}/v1/tickets -H 'Content-Type: application/json' -d '{"id": "DEMO-1", "title": "Zebra printer jams on every label roll", "created": "2025-07-10T09:00:00", "fields": {"product": "Mobile App"}}'
  curl -s -X DELETE ${URL}/v1/tickets/DEMO-1
  curl -s ${URL}/metrics | grep ticketsearch_stage_seconds_count
  curl -s ${URL}/v1/collections      # this index is the collection 'default'; the same routes live under
                                     # /v1/collections/default/... ('ticketsearch serve --root DIR': many)

MSG
exec "${BIN}/ticketsearch" serve --index "${INDEX}" --port "${PORT}"
