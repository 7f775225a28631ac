"""Timestamps in the RFC 3339 form the API server writes (`2025-01-02T03:04:05Z`)."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_rfc3339(ahead: float = 0) -> str:
    """The current UTC time (plus `ahead` seconds), second precision, as Kubernetes writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ahead))


def parse_rfc3339(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp."""
    return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
