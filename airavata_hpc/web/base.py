"""The base handler every endpoint uses: request ids, authentication, JSON in and out, and
``ErrorResponse`` bodies for every 4xx and 5xx.

An unexpected exception becomes a 500 whose body holds only the request id; the traceback goes
to the log under that id, so the client learns nothing about the internals and an operator
can still find the cause.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import tornado.web

from airavata_hpc import __version__
from airavata_hpc.auth import ANONYMOUS_ADMIN, Principal, authenticate
from airavata_hpc.errors import ApiError, error_body
from airavata_hpc.metrics import Metrics
from airavata_hpc.settings import Settings

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    503: "unavailable",
}


@dataclass
class AppContext:
    """What handlers share: settings, the JWT secret, metrics and the execution engine."""

    settings: Settings
    jwt_secret: str
    metrics: Metrics
    engine: Any = None
    started_at: float = field(default_factory=time.time)
    version: str = __version__


class ApiHandler(tornado.web.RequestHandler):
    requires_auth = True

    def initialize(self, context: AppContext) -> None:
        self.context = context
        self.principal: Principal | None = None

    def prepare(self) -> None:
        given = self.request.headers.get("X-Request-ID", "")
        self.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        self.set_header("X-Request-ID", self.request_id)
        if any("\x00" in arg for arg in self.path_args):
            # No id holds a NUL, and PostgreSQL refuses one in a query: it names nothing.
            raise ApiError(404, "not_found", "no such resource: the id holds a NUL character")
        if self.requires_auth:
            if self.context.settings.auth_enabled:
                self.principal = authenticate(
                    self.context.jwt_secret,
                    self.request.headers.get("Authorization"),
                    self.request.headers.get("X-API-Key"),
                )
            else:
                self.principal = ANONYMOUS_ADMIN

    # -- JSON in and out ----------------------------------------------------------------------

    def json_body(self) -> Any:
        if not self.request.body:
            raise ApiError(400, "bad_request", "a JSON request body is required")
        try:
            return json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", f"request body is not valid JSON: {exc}") from None

    def send_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":")))

    def query_args(self, *names: str) -> dict[str, str | None]:
        return {name: self.get_query_argument(name, None) for name in names}

    # -- errors --------------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_status(exc.status)
            body = error_body(exc.error, exc.message, self._request_id(), exc.details)
        elif status_code >= 500:
            body = error_body(
                "internal_error",
                "an internal error occurred; quote this request_id to the operator",
                self._request_id(),
            )
        else:
            message = self._reason or "request failed"
            if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code != 405:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            body = error_body(_REASONS.get(status_code, "error"), message, self._request_id())
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        # send_error() cleared the headers set in prepare(), so the id goes on again.
        self.set_header("X-Request-ID", body["request_id"])
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":")))

    def allowed_methods(self) -> list[str]:
        base = tornado.web.RequestHandler
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(type(self), method.lower()) is not getattr(base, method.lower())
        ]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.debug(
                "request %s: %s %s -> %s %s",
                self._request_id(),
                self.request.method,
                self.request.uri,
                value.status,
                value.message,
            )
        elif isinstance(value, tornado.web.HTTPError):
            log.info(
                "request %s: %s %s -> %s",
                self._request_id(),
                self.request.method,
                self.request.uri,
                value.status_code,
            )
        else:
            log.error(
                "request %s: %s %s failed",
                self._request_id(),
                self.request.method,
                self.request.uri,
                exc_info=(typ, value, tb),
            )

    def _request_id(self) -> str:
        if not getattr(self, "request_id", None):
            self.request_id = uuid.uuid4().hex
        return self.request_id

    def on_finish(self) -> None:
        name = type(self).__name__
        metrics = self.context.metrics
        metrics.requests.labels(name, self.request.method, str(self.get_status())).inc()
        metrics.latency.labels(name).observe(self.request.request_time())


class NotFoundHandler(ApiHandler):
    """Every unknown path: a 404 ``ErrorResponse`` rather than Tornado's HTML page."""

    requires_auth = False

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, "not_found", f"no such path: {self.request.path}")
