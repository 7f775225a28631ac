"""Helpers for status conditions (type, status, reason, message, lastTransitionTime) as controllers write them."""

from __future__ import annotations

from typing import Any

from .clock import now_rfc3339


def has_condition(status: dict[str, Any], kind: str) -> bool:
    """Whether a condition of this type is "True"."""
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def set_condition(status: dict[str, Any], kind: str, state: str, reason: str, message: str,
                  update_time: bool = False) -> None:
    """Add or change a condition; lastTransitionTime moves only when the status flips."""
    now = now_rfc3339()
    conditions = status.setdefault("conditions", [])
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") != state:
                condition["lastTransitionTime"] = now
            condition.update({"status": state, "reason": reason, "message": message})
            if update_time:
                condition["lastUpdateTime"] = now
            return
    condition = {"type": kind, "status": state, "reason": reason, "message": message}
    if update_time:
        condition["lastUpdateTime"] = now
    condition["lastTransitionTime"] = now
    if not update_time:
        condition["lastProbeTime"] = now
    conditions.append(condition)
