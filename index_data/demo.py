"""Synthetic support tickets in the `support` schema, with clusters of true duplicates in other words.

Each ticket comes from a problem topic (product, component, type and severity) with concrete details
(a feature, an error code, a platform). Duplicates share the topic and the details; about half of the later
reports copy the first one's subject line, the rest use another title phrasing, and all are written with
another body phrasing, another opener and often another channel or reporter tier.

The calendar must not give the answer away (a model trained on it would learn time instead of text):
- a duplicate follows its first report after a long-tailed gap (`duplicate_gap_days`: most within weeks, some
  months later, a few over a year);
- outages bring bursts of 3-5 reports on one topic from different customers within two days (about 9% of the
  tickets), each with details of its own and none a duplicate of another: look-alikes close in time;
- the dates end at `end` (default: the time of generation), so a ticket filed today is as close to the data as
  in a live tracker. A seed fixes everything but that end: two calls with one seed and different ends give the
  same tickets shifted in time.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ticketsearch.atomic import atomic_write_with
from ticketsearch.requests import naive_utc

REF_PREFIXES = ["ERR", "E", "CODE", "REF"]
OPENERS = [
    "", "Hi team,", "Hello support,", "Urgent:", "Hi,", "Good morning,", "Following up on a customer call:",
    "Reported via the account manager:", "Not sure if this is known, but", "Quick question -",
]
CLOSERS = [
    "", "Thanks.", "Please advise.", "Any help appreciated.", "Can someone take a look?",
    "This is blocking our team.", "Let me know if you need logs.", "Happy to jump on a call.",
]
PLATFORMS = ["Chrome 131 on Windows 11", "Safari 18 on macOS", "Firefox 133 on Ubuntu", "Edge on Windows 10",
             "iOS 18 app", "Android 15 app", "the desktop client 4.2", "the desktop client 4.3"]
FEATURES = ["invoice PDF", "CSV export", "saved report", "team workspace", "webhook", "scheduled job",
            "user profile", "dashboard widget", "payment method", "audit log", "API token", "custom field"]
ERRORS = ["ERR-4012", "ERR-5003", "E1042", "HTTP 502", "HTTP 500", "HTTP 403", "timeout after 30s", "TOKEN_EXPIRED",
          "SYNC_CONFLICT", "QUOTA_EXCEEDED"]


@dataclass(frozen=True)
class Topic:
    product: str
    component: str
    item_type: str
    severity: str
    titles: tuple[str, ...]
    bodies: tuple[str, ...]


T = Topic
TOPICS: list[Topic] = [
    T("SSO / Login", "password-reset", "incident", "high",
      ("Cannot log in after resetting password", "Password reset succeeded but login still fails",
       "Login rejected right after a password change", "Locked out after password reset on {platform}"),
      ("After resetting my password the login page keeps saying the credentials are wrong ({error}).",
       "The reset email arrives and the new password is accepted, but signing in fails with {error} on {platform}.",
       "Users who changed their password today cannot get back in. The form returns {error}.")),
    T("SSO / Login", "saml", "incident", "critical",
      ("SAML single sign-on broken for the whole company", "SSO redirect loop with our identity provider",
       "Nobody can sign in through SAML", "Okta SSO login fails with {error}"),
      ("Since this morning every SAML login ends in {error}. Our whole org is blocked.",
       "Clicking 'Sign in with SSO' bounces between the IdP and the app forever, then shows {error}.",
       "The SAML assertion seems to be rejected: all employees see {error} on {platform}.")),
    T("SSO / Login", "mfa", "question", "medium",
      ("How do I reset two-factor for a user who lost their phone?", "Need to disable MFA for one employee",
       "User lost authenticator device, cannot pass 2FA", "Bypass two-step verification for a locked user"),
      ("One of our admins lost their phone and cannot complete the MFA prompt. How can we reset it?",
       "Is there a way for an owner to remove the second factor for a specific user?",
       "An employee replaced their phone and now the 2FA codes do not match.")),
    T("Billing Portal", "invoices", "incident", "high",
      ("{feature} download returns an error", "Cannot download the {feature} from billing",
       "Billing page fails when opening the {feature}", "{feature} link broken in the billing portal"),
      ("When I click download on the {feature} I get {error} instead of the file.",
       "Our finance team cannot open the {feature}; the portal shows {error} on {platform}.",
       "Trying to fetch last month's {feature} fails every time with {error}.")),
    T("Billing Portal", "charges", "incident", "critical",
      ("Customer charged twice for the same subscription", "Duplicate charge on the monthly invoice",
       "We were billed two times this month", "Double payment taken from our card"),
      ("Our card statement shows two identical charges for this month's plan. Please refund one.",
       "The subscription renewal charged us twice within a minute; the second attempt logged {error}.",
       "Billing took the payment two times. Finance needs a refund and an explanation.")),
    T("Billing Portal", "plans", "request", "low",
      ("Please switch our plan from monthly to annual", "Request to change billing cycle to yearly",
       "Move our subscription to annual billing", "Upgrade to yearly plan with discount"),
      ("We would like to move to annual billing starting next cycle. Can you arrange that?",
       "Can you change our subscription from monthly payments to a single yearly invoice?",
       "Please convert our account to the annual plan and prorate the current month.")),
    T("Payments", "card-update", "incident", "high",
      ("Cannot update the {feature}", "Saving a new {feature} fails with {error}",
       "Card update form rejects valid card", "Updating payment details throws {error}"),
      ("Entering a new card in the {feature} form and pressing save returns {error}.",
       "Our card expired and the portal will not accept the replacement: {error} on {platform}.",
       "The payment details page spins and then shows {error} when we submit a valid card.")),
    T("Mobile App", "sync", "incident", "high",
      ("Mobile app does not sync changes", "Changes made on the phone never reach the web app",
       "Sync stuck on {platform}", "Offline edits lost after reconnecting"),
      ("Edits made in the mobile app are not visible on the web; the sync log shows {error}.",
       "On {platform} the sync spinner runs forever and then reports {error}.",
       "After going offline and back online, my changes disappear. The app shows {error}.")),
    T("Mobile App", "crash", "incident", "critical",
      ("App crashes on launch", "Mobile app closes immediately after opening",
       "Crash at startup on {platform}", "App force-closes when opening the {feature}"),
      ("Since the latest update the app crashes as soon as it starts on {platform}.",
       "The application opens for a second and closes. Reinstalling did not help.",
       "Opening the {feature} screen makes the app quit instantly; crash report mentions {error}.")),
    T("Mobile App", "notifications", "incident", "medium",
      ("Push notifications stopped arriving", "Not receiving push alerts on my phone",
       "Mobile notifications silent since update", "No push notifications for new messages on {platform}"),
      ("We no longer get push notifications on {platform}, although they are enabled in settings.",
       "Push alerts worked until last week; now nothing arrives and the device log shows {error}.",
       "None of our agents get notified on mobile about new assignments anymore.")),
    T("Analytics Dashboard", "reports", "incident", "medium",
      ("{feature} shows wrong totals", "Numbers in the {feature} do not match the raw data",
       "Dashboard totals are off by a day", "Incorrect revenue figures in {feature}"),
      ("The totals in the {feature} are lower than what the export contains for the same period.",
       "Figures on the dashboard look shifted by one day, probably a timezone issue.",
       "Our {feature} reports numbers that disagree with the database; finance noticed it.")),
    T("Analytics Dashboard", "performance", "incident", "high",
      ("Dashboard extremely slow to load", "Analytics page takes minutes to render",
       "Reports time out with {error}", "Dashboard hangs when opening the {feature}"),
      ("The analytics dashboard takes over two minutes to load and sometimes fails with {error}.",
       "Opening the {feature} freezes the browser tab on {platform}.",
       "Every report request ends with {error} since yesterday afternoon.")),
    T("Analytics Dashboard", "charts", "feedback", "low",
      ("Please add a dark mode to charts", "Feature request: dark theme for dashboards",
       "Charts are hard to read at night, dark mode?", "Suggestion: dark colour scheme for analytics"),
      ("It would be great to have a dark theme for the charts; the white background is tiring.",
       "Our night shift asked for a dark mode in the analytics section.",
       "Consider adding a dark colour palette for dashboards and chart widgets.")),
    T("API Gateway", "rate-limits", "incident", "high",
      ("API returns 429 far below our quota", "Rate limit errors although we are under the limit",
       "Getting {error} from the API during normal traffic", "Throttling kicks in too early"),
      ("Our integration gets 429 responses at a tenth of the documented rate limit.",
       "The API started rejecting calls with {error} even though our traffic did not change.",
       "We are throttled at about 10 requests per second while our plan allows 100.")),
    T("API Gateway", "webhooks", "incident", "high",
      ("Webhooks not delivered", "{feature} events never reach our endpoint",
       "Webhook deliveries failing with {error}", "No webhook calls since the last release"),
      ("Our endpoint has not received a single webhook since Monday; the delivery log shows {error}.",
       "The {feature} events are marked as sent but nothing arrives on our side.",
       "Webhook retries keep failing with {error} although our server is up.")),
    T("API Gateway", "auth", "incident", "critical",
      ("API token rejected", "Valid API key suddenly returns {error}",
       "All API calls fail authentication", "Token authentication broken after rotation"),
      ("Our API token was working yesterday; today every call returns {error}.",
       "After rotating the API key, requests are rejected with {error}.",
       "Integration is down: authentication fails for all requests with {error}.")),
    T("API Gateway", "docs", "question", "low",
      ("Which endpoint lists archived tickets?", "How to fetch archived items through the API",
       "API docs unclear about archived records", "Is there an API for archived data?"),
      ("I cannot find the endpoint that returns archived tickets in the documentation.",
       "Is it possible to query archived records via the REST API, and if so which route?",
       "The docs mention archiving but not how to read archived data back.")),
    T("Email Notifications", "delivery", "incident", "high",
      ("Notification emails not arriving", "Customers do not receive our email alerts",
       "Email notifications delayed by hours", "Alert emails missing since {error}"),
      ("None of our users got the notification emails today; the mail log shows {error}.",
       "Email alerts arrive four to six hours late, which breaks our SLA.",
       "Our customers stopped receiving automatic emails from the platform.")),
    T("Email Notifications", "templates", "change", "low",
      ("Update the logo in email templates", "Change branding on notification emails",
       "Replace old company logo in outgoing mails", "New brand colours for email templates"),
      ("We rebranded last month; please update the logo used in all notification emails.",
       "Could you change the header image and colours of the outgoing email templates?",
       "Our emails still show the old logo. Please switch to the new brand assets.")),
    T("Data Export", "csv", "incident", "medium",
      ("{feature} is missing columns", "Export drops the custom fields",
       "Exported file has empty columns", "CSV export incomplete on {platform}"),
      ("The {feature} no longer includes the custom field columns we rely on.",
       "When exporting, several columns come out empty although the UI shows values.",
       "Our nightly export file is missing data since the update; the job log shows {error}.")),
    T("Data Export", "scheduled", "incident", "high",
      ("Scheduled export job did not run", "Nightly {feature} failed with {error}",
       "Automatic export stopped working", "No export file delivered this morning"),
      ("The scheduled export that runs every night did not produce a file; status says {error}.",
       "Our {feature} has been failing for three days with {error}.",
       "We did not receive the nightly export at all. Downstream reports are empty.")),
    T("Data Export", "gdpr", "request", "medium",
      ("Request a full export of our account data", "GDPR data export request",
       "Need a copy of all personal data we store", "Export everything before we close the account"),
      ("Under GDPR we need a complete export of the data you hold for our organisation.",
       "Please provide a full data export for our account; our DPO asked for it.",
       "We plan to migrate and need all records, attachments and audit logs exported.")),
    T("SSO / Login", "sessions", "incident", "medium",
      ("Logged out every few minutes", "Session expires too quickly",
       "Users kicked out of the app repeatedly", "Random logouts on {platform}"),
      ("Our agents get logged out roughly every five minutes and lose their work.",
       "Sessions expire much faster than the configured 8 hours; we see {error}.",
       "On {platform} the app signs people out randomly during the day.")),
    T("Billing Portal", "tax", "question", "medium",
      ("VAT number not shown on invoice", "How to add our tax ID to invoices",
       "Invoices missing VAT registration", "Tax identifier absent from {feature}"),
      ("Our accounting needs the VAT number printed on each invoice. Where do we add it?",
       "The invoices do not show our tax ID although we entered it in settings.",
       "Can you reissue the {feature} with our VAT registration number?")),
    T("Mobile App", "login", "incident", "high",
      ("Cannot sign in on the mobile app", "Mobile login fails but web works",
       "App says invalid credentials on {platform}", "Login button does nothing in the app"),
      ("I can log in on the website but the mobile app rejects the same credentials with {error}.",
       "Tapping sign in on {platform} does nothing; no error, no progress.",
       "The app keeps showing invalid credentials although the password is correct.")),
    T("Analytics Dashboard", "permissions", "incident", "medium",
      ("Viewer role can see admin reports", "Permissions leak on the dashboard",
       "Read-only users access restricted {feature}", "Role restrictions ignored in analytics"),
      ("Users with the viewer role can open reports that should be admin-only.",
       "A read-only account was able to see the {feature} meant for managers.",
       "Access control on dashboards seems broken; restricted widgets are visible to everyone.")),
    T("API Gateway", "latency", "incident", "high",
      ("API latency spiked", "Slow API responses since the deploy",
       "Requests take several seconds", "API p99 latency went through the roof"),
      ("Average response time of the API went from 100 ms to 4 seconds this afternoon.",
       "Since your last deployment our calls are very slow and some end in {error}.",
       "We measure multi-second latency on simple GET requests; nothing changed on our side.")),
    T("Payments", "refunds", "request", "medium",
      ("Refund not received", "Where is my refund?",
       "Refund promised but not credited", "Refund still pending after two weeks"),
      ("Support confirmed a refund two weeks ago but the money is not back on our card.",
       "We were told the refund was issued; our bank sees nothing yet.",
       "Please check the status of our refund, it has been pending for 14 days.")),
    T("Email Notifications", "unsubscribe", "incident", "low",
      ("Unsubscribe link does not work", "Cannot opt out of emails",
       "Still getting emails after unsubscribing", "Unsubscribe page shows {error}"),
      ("Clicking unsubscribe in the footer opens a page with {error}.",
       "I unsubscribed twice and I keep receiving the newsletter.",
       "The opt-out link in your emails is broken.")),
    T("Data Export", "api-export", "question", "low",
      ("Can exports be triggered through the API?", "Automate export via REST",
       "API endpoint for starting an export", "Start a {feature} programmatically"),
      ("We want to trigger exports from our scheduler. Is there an API for that?",
       "Is it possible to start a {feature} with an API call instead of the UI?",
       "Looking for a way to automate data exports without clicking in the portal.")),
]
CONTEXT = [
    "We already cleared the browser cache.", "Restarting did not help.", "It started after the weekend.",
    "Our admin double-checked the settings.", "Two colleagues see the same thing.", "It worked fine last Friday.",
    "We are on the {tier} plan.", "This affects our month-end close.", "Nothing changed on our side.",
    "Screenshots are attached.", "We tried a different network as well.", "The status page shows all green.",
    "Our account manager is in copy.", "It happens every time, not intermittently.",
    "It only happens for some of our users.", "We need this fixed before our audit next week.",
]
CHANNELS = ["email", "chat", "phone", "portal"]
TIERS = ["enterprise", "professional", "starter", "free"]
TIER_WEIGHTS = [0.2, 0.3, 0.3, 0.2]
SEVERITY_SHIFT = ["critical", "high", "medium", "low"]


def _render(template: str, slots: dict[str, str]) -> str:
    out = template.format(**slots)
    return out[0].upper() + out[1:] if out else out


def _ticket(rng: random.Random, topic: Topic, slots: dict[str, str], phrasing: int | None) -> dict[str, Any]:
    ti = phrasing if phrasing is not None else rng.randrange(len(topic.titles))
    bi = rng.randrange(len(topic.bodies))
    tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
    body_parts = [rng.choice(OPENERS), _render(topic.bodies[bi], slots)]
    if rng.random() < 0.5:
        body_parts.append(f"Seen on {slots['platform']}.")
    body_parts += [c.format(tier=tier) for c in rng.sample(CONTEXT, k=rng.choice([0, 1, 1, 2]))]
    if rng.random() < 0.6:
        body_parts.append(
            f"Account {rng.randrange(10000, 99999)}, since {rng.randrange(24):02d}:{rng.randrange(60):02d} UTC."
        )
    body_parts.append(rng.choice(CLOSERS))
    sev_idx = SEVERITY_SHIFT.index(topic.severity)
    if rng.random() < 0.25:
        sev_idx = min(3, max(0, sev_idx + rng.choice([-1, 1])))
    category = SEVERITY_SHIFT[sev_idx]
    affected = int(rng.lognormvariate(1.5 + (3 - sev_idx) * 0.8, 1.0))
    return {
        "title": _render(topic.titles[ti], slots),
        "body": " ".join(p for p in body_parts if p),
        "fields": {
            "category": category,
            "item_type": topic.item_type,
            "channel": rng.choice(CHANNELS),
            "customer_tier": tier,
            "product": topic.product,
            "component": topic.component,
            "affected_count": affected,
            "time_sensitivity": round(min(1.0, max(0.0, (3 - sev_idx) / 3 + rng.gauss(0, 0.1))), 3),
        },
    }


# Tickets on topics the demo data never covers (for tests and scripts that ask about strangers: none of them may be
# called a duplicate of a demo ticket, dated or not).
UNSEEN_TOPICS: list[tuple[str, str]] = [
    ("Telescope mirror fogs up at dusk", "The primary mirror of the observatory telescope collects condensation "
     "every evening after sunset, and the dew heater does not switch on."),
    ("Tractor hydraulics lose pressure when cold", "On frosty mornings the rear lift arms of the tractor drop "
     "slowly; the hydraulic fluid looks milky."),
    ("Choir sheet music printed in the wrong key", "The anthem for Sunday was printed a fourth too low for the "
     "sopranos; the organist's copy is correct."),
    ("Beehive frames warped after the rain", "Three frames in the second super bowed outwards after the storm and "
     "the bees built comb across them."),
    ("Sourdough starter smells of acetone", "Our starter has a nail-polish smell after a week in the fridge and the "
     "loaves come out flat."),
]


SPAN_DAYS = 540  # first reports spread over this many days before `end`
BURST_DRAW = 0.03  # a draw is an outage burst this often: about 9% of the tickets (same topic, not duplicates)


def duplicate_gap_days(rng: random.Random) -> float:
    """Days from a first report to a later duplicate: most within weeks (log-uniform from half an hour to 30
    days), some months later (30-180 days), a few over a year (365-500 days)."""
    u = rng.random()
    if u < 0.72:
        return math.exp(rng.uniform(math.log(0.5 / 24), math.log(30.0)))
    if u < 0.92:
        return rng.uniform(30.0, 180.0)
    if u < 0.96:
        return rng.uniform(180.0, 365.0)
    return rng.uniform(365.0, 500.0)


def _slots(rng: random.Random) -> dict[str, str]:
    return {"feature": rng.choice(FEATURES), "error": rng.choice(ERRORS), "platform": rng.choice(PLATFORMS)}


def generate(
    n: int = 2000, seed: int = 0, dup_fraction: float = 0.25, end: datetime | None = None
) -> list[dict[str, Any]]:
    """Return `n` tickets sorted by `created`, with ids SUP-1..SUP-n and `duplicate_of` set on duplicates; the
    last one is filed at `end` (a naive time is UTC; default: now)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    end = naive_utc(datetime.now(UTC) if end is None else end).replace(microsecond=0)
    if end < datetime.min + timedelta(days=SPAN_DAYS + 1):
        raise ValueError(f"the end must be after {(datetime.min + timedelta(days=SPAN_DAYS + 1)).date()}: the "
                         f"tickets span {SPAN_DAYS} days before it")
    rng = random.Random(seed)
    items: list[tuple[float, dict[str, Any], int | None]] = []  # (days into the span, ticket, group)
    group = 0
    while len(items) < n:
        topic = rng.choice(TOPICS)
        if rng.random() < BURST_DRAW:
            # an outage: reports on one topic from different customers within two days, each with details and an
            # error reference of its own; none is a duplicate of another
            at = SPAN_DAYS * rng.random()
            for _ in range(min(rng.randint(3, 5), n - len(items))):
                t = _ticket(rng, topic, _slots(rng), None)
                if rng.random() < 0.4:
                    t["body"] += f" Error reference {rng.choice(REF_PREFIXES)}-{rng.randrange(1000, 10000)}."
                items.append((at + rng.uniform(0.0, 2.0), t, None))
            continue
        slots = _slots(rng)
        size = 1
        if rng.random() < dup_fraction / 2:
            size = rng.choice([2, 2, 2, 3, 3, 4])
        size = min(size, n - len(items))
        gaps = [0.0] + [duplicate_gap_days(rng) for _ in range(size - 1)]
        # the whole cluster lies within the span: a long gap moves its first report earlier
        created = (SPAN_DAYS - max(gaps)) * rng.random()
        phrasings = rng.sample(range(len(topic.titles)), k=min(size, len(topic.titles)))
        # Reports of one incident usually quote the same error reference; other tickets of the same topic are
        # look-alikes with references of their own (the hard negatives).
        ref = f"{rng.choice(REF_PREFIXES)}-{rng.randrange(1000, 10000)}"
        for j in range(size):
            # a later report often copies the first one's subject line; otherwise it is worded afresh
            same_subject = j > 0 and rng.random() < 0.5
            t = _ticket(rng, topic, slots, phrasings[0] if same_subject else phrasings[j % len(phrasings)])
            if rng.random() < (0.8 if size > 1 else 0.4):
                t["body"] += f" Error reference {ref}."
            items.append((created + gaps[j], t, group if size > 1 else None))
        group += 1
    items.sort(key=lambda x: x[0])
    last = items[-1][0]
    masters: dict[int, str] = {}
    out: list[dict[str, Any]] = []
    for i, (days, t, g) in enumerate(items, start=1):
        tid = f"SUP-{i}"
        dup = None
        if g is not None:
            if g in masters:
                dup = masters[g]
            else:
                masters[g] = tid
        when = (end - timedelta(days=last - days)).replace(microsecond=0)
        out.append({"id": tid, "created": when.isoformat() + "+00:00", "duplicate_of": dup, **t})
    return out


def write_demo(path: Path, n: int = 2000, seed: int = 0, end: datetime | None = None) -> int:
    """Write generated tickets as JSONL (gzipped if the name ends in .gz). Returns the number written."""

    rows = generate(n, seed, end=end)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")

    def _write(tmp: Path) -> None:
        if str(path).endswith(".gz"):
            with gzip.open(tmp, "wb") as fh:
                fh.write(payload)
        else:
            tmp.write_bytes(payload)

    atomic_write_with(Path(path), _write)
    return len(rows)
