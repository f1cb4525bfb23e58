"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

A valid `POST /v1/campaigns` body must also have issueStartsAt < issueEndsAt <= couponExpiresAt,
which no JSON Schema can say. Without help five in six generated campaigns are answered 400 and
never reach MySQL and Redis. For positive cases this puts the three generated dates in order
(instants compared across offsets), and drops the rare case whose first two instants are equal, so
every positive campaign must be created: `positive_data_acceptance` can then demand 201.
Negative cases are left alone.

The points POSTs: a positive case gets an Idempotency-Key of its own (Hypothesis draws the same few
keys again and again, and a key reused with another body is a correct 422); an earn's `expiresAt`
is moved into the accepted window (after now, at most 3,650 days ahead); a transfer's two users
differ. Then `positive_data_acceptance` can demand the business answers only.
"""

import re
import uuid
from datetime import date, datetime, timedelta, timezone

import schemathesis
from schemathesis import GenerationMode

DATES = ("issueStartsAt", "issueEndsAt", "couponExpiresAt")
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def instant(text):
    """The instant an RFC 3339 string names, as a comparable number, or None."""
    m = RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        days = date(year, month, day).toordinal()
    except ValueError:
        return None
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60 * (1 if m.group(9) == "+" else -1)
    fraction = float("0" + m.group(7)) if m.group(7) else 0.0
    return days * 86400 + hour * 3600 + minute * 60 + second - offset + fraction


def _positive_campaign(context, case):
    meta = case.meta
    return (
        context.operation is not None
        and context.operation.method.upper() == "POST"
        and context.operation.path == "/v1/campaigns"
        and meta is not None
        and meta.generation.mode == GenerationMode.POSITIVE
        and isinstance(case.body, dict)
    )


def _ordered(body):
    """The three dates in order, or None when they cannot be ordered strictly enough."""
    values = [body.get(name) for name in DATES]
    keys = [instant(v) for v in values]
    if any(k is None for k in keys):
        return None
    ordered = [v for _, v in sorted(zip(keys, values), key=lambda pair: pair[0])]
    if sorted(keys)[0] == sorted(keys)[1]:
        return None
    return ordered


@schemathesis.hook
def filter_case(context, case):
    if not _positive_campaign(context, case):
        return True
    return _ordered(case.body) is not None


POINTS_WRITES = (
    "/v1/users/{userId}/points/earn",
    "/v1/users/{userId}/points/use",
    "/v1/points/transactions/{transactionId}/cancel",
    "/v1/points/transfers",
)


def _positive_points_write(context, case):
    meta = case.meta
    return (
        context.operation is not None
        and context.operation.method.upper() == "POST"
        and context.operation.path in POINTS_WRITES
        and meta is not None
        and meta.generation.mode == GenerationMode.POSITIVE
    )


def _points_write(case):
    case.headers = {**(case.headers or {}), "Idempotency-Key": str(uuid.uuid4())}
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and "expiresAt" in body:
        later = datetime.now(timezone.utc) + timedelta(days=30)
        case.body = {**body, "expiresAt": later.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if body is not None and body.get("fromUserId") is not None and body.get("fromUserId") == body.get("toUserId"):
        case.body = {**case.body, "toUserId": body["fromUserId"][:63] + ("a" if body["fromUserId"][-1:] != "a" else "b")}


@schemathesis.hook
def map_case(context, case):
    if _positive_points_write(context, case):
        _points_write(case)
    if _positive_campaign(context, case):
        ordered = _ordered(case.body)
        if ordered is not None:
            case.body = {**case.body, **dict(zip(DATES, ordered))}
    return case
