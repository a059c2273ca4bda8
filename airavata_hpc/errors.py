"""The service's error type and the spec's ``ErrorResponse`` body.

Handlers raise :class:`ApiError`; the web layer turns it into an ``ErrorResponse`` with the
request id. What the client reads (``message``) is kept apart from what the log records, so an
unexpected failure shows the client only an id to quote.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class ApiError(Exception):
    """An error the client is meant to see, with its HTTP status and a stable ``error`` code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details or {}


def bad_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "bad_request", message, details)


def validation_error(field: str, problem: str) -> ApiError:
    return ApiError(
        400, "validation_error", f"{field}: {problem}", {"field": field, "problem": problem}
    )


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident!r} not found", {"id": ident})


def conflict(message: str, **details: Any) -> ApiError:
    return ApiError(409, "conflict", message, details)


def error_body(
    error: str, message: str, request_id: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build an ``ErrorResponse`` as the spec defines it."""
    return {
        "error": error,
        "message": message,
        "details": details or {},
        "timestamp": format_time(datetime.now(UTC)),
        "request_id": request_id,
    }


def format_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, the form every timestamp in a response takes."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
