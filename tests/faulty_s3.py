"""A second HTTP endpoint onto moto's S3 that answers chosen PUTs with S3 errors.

It serves moto's own WSGI application (sharing its state with the main moto
server) behind a small middleware, so boto3's real network and retry path meets
throttling and 5xx answers, and acknowledgements whose echoed checksum or
version id was altered on the way back; or meets an IAM-style 403 AccessDenied on
every object DELETE (credentials without s3:DeleteObject/s3:DeleteObjectVersion).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

ERRORS = {
    503: ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    500: ("500 Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


def _error(start_response: Callable, line: str, code: str, message: str) -> list[bytes]:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}" \
           f"</Message></Error>".encode()
    start_response(line, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


class FaultyS3:
    def __init__(self) -> None:
        self.failures: list[int] = []  # statuses for the next PUTs, in order; then pass through
        self.always: int | None = None  # answer every PUT with this status
        self.seen_puts = 0
        # Rewrites of successful PUT answers: header name -> new value, or None to drop it.
        self.rewrite_headers: dict[str, str | None] = {}
        self.deny_deletes = False  # answer every object DELETE as IAM does a missing permission
        self.seen_deletes = 0
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._middleware, True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _middleware(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "DELETE" and environ.get("PATH_INFO", "/").count("/") > 1:
            self.seen_deletes += 1
            if self.deny_deletes:
                return _error(start_response, "403 Forbidden", "AccessDenied",
                              "User: arn:aws:iam::123456789012:user/archiver is not authorized to perform: "
                              "s3:DeleteObjectVersion on resource because no identity-based policy allows it")
        if environ["REQUEST_METHOD"] == "PUT" and environ.get("PATH_INFO", "/").count("/") > 1:
            self.seen_puts += 1
            status = self.always or (self.failures.pop(0) if self.failures else None)
            if status:
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                return _error(start_response, *ERRORS[status])
            if self.rewrite_headers:
                return self._app(environ, self._rewriting(start_response))
        return self._app(environ, start_response)

    def _rewriting(self, start_response: Callable) -> Callable:
        def rewrite(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            changes = {name.lower(): value for name, value in self.rewrite_headers.items()}
            kept = [(name, changes.get(name.lower(), value)) for name, value in headers]
            return start_response(status, [(name, value) for name, value in kept if value is not None], *args)
        return rewrite

    def __enter__(self) -> "FaultyS3":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
