"""API errors as the Kubernetes API server reports them: an HTTP code plus a `Status` object body."""

from __future__ import annotations

from typing import Any

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error response: `code`, `reason` and `message`, with optional `details` (name, group, kind, causes)."""

    def __init__(self, code: int, message: str, reason: str = "", details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The `Status` object the real server sends as the body."""
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                success: bool = False) -> dict[str, Any]:
    """A `v1 Status` object."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success" if success else "Failure"}
    if not success:
        body["message"] = message
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def not_found(group: str, plural: str, name: str) -> ApiError:
    """404 for a named object, worded like the real server (`jobs.batch "x" not found`)."""
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(404, f'{qualified} "{name}" not found', "NotFound",
                    {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural})


def already_exists(group: str, plural: str, name: str) -> ApiError:
    """409 AlreadyExists for a create with a taken name."""
    qualified = f"{plural}.{group}" if group else plural
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, f'{qualified} "{name}" already exists', "AlreadyExists", details)


def conflict(group: str, plural: str, name: str) -> ApiError:
    """409 Conflict for an update with a stale metadata.resourceVersion."""
    qualified = f"{plural}.{group}" if group else plural
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", "Conflict", details)


def resource_not_found() -> ApiError:
    """404 for a path naming no resource type the server serves."""
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def expired(message: str) -> ApiError:
    """410 Gone / Expired, for a resourceVersion older than the kept history."""
    return ApiError(410, message, "Expired")
