#!/usr/bin/env python3
"""An independent verifier of fcfs-coupons webhook deliveries, Python's standard library only
(deliberately not the project's signing code): the tests run it on every delivery they check.

    verify_webhook.py SECRET SIGNATURE_HEADER < BODY

SIGNATURE_HEADER is the `X-FCFS-Signature` value, `t=<unix seconds>,v1=<hex>`; `v1` must be the
HMAC-SHA256, keyed with the whole secret string (`whsec_...`) as UTF-8, of `<t>.<body>` with the
body exactly as received. Exit 0 when a `v1` matches (compared in constant time) and `t` is within
300 seconds of now; 1 otherwise (also for a malformed header); 2 for a wrong command line.
"""

import hashlib
import hmac
import sys
import time

TOLERANCE_SECONDS = 300


def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    timestamp = None
    candidates = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if timestamp is not None or not value.isdigit():
                return False
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    secret, header = sys.argv[1], sys.argv[2]
    body = sys.stdin.buffer.read()
    return 0 if verify(secret, header, body, time.time()) else 1


if __name__ == "__main__":
    sys.exit(main())
