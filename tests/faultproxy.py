"""An HTTP proxy on loopback that loses replies, resets connections and delays requests, in
front of a real S3 API (moto's server), so that tests see what a flaky network does to the
registry's protocol.

Each request is numbered in arrival order; ``plan(method, path, n)`` decides its fate:

- ``"pass"``: forwarded, and its reply sent back;
- ``"drop"``: forwarded (the server acts on it), but the client's connection is closed before
  any reply: the reply was lost;
- ``"reset"``: the connection is reset (RST) before the request reaches the server;
- a float: forwarded after that many seconds;
- ``(status, code)``: not forwarded; answered with that S3 error (``(503, "SlowDown")``).

moto checks a conditional PUT's ``If-Match``/``If-None-Match`` and then writes, without a lock,
on a threaded server; S3 itself decides and writes atomically. So the proxy forwards one
conditional PUT at a time, and what the tests see of compare-and-swap is what S3 gives.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Plan = Callable[[str, str, int], "str | float | tuple[int, str]"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.plan: Plan = lambda method, path, n: "pass"
        self.log: list[tuple[str, str, str | float | tuple[int, str]]] = []  # in order
        self._lock = threading.Lock()
        self._conditional = threading.Lock()  # moto's conditional PUTs are not atomic
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    n = len(proxy.log)
                    fate = proxy.plan(self.command, self.path, n)
                    proxy.log.append((self.command, self.path, fate))
                if fate == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    return
                if isinstance(fate, tuple):
                    status, code = fate
                    error = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                             f"<Message>{code}</Message></Error>").encode()  # fmt: skip
                    self.send_response_only(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(error)
                    return
                if isinstance(fate, float):
                    threading.Event().wait(fate)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conditional = self.command == "PUT" and (
                    "If-Match" in self.headers or "If-None-Match" in self.headers
                )
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    with proxy._conditional if conditional else contextlib.nullcontext():
                        conn.request(self.command, self.path, body=body, headers=headers)
                        reply = conn.getresponse()
                        data = reply.read()
                finally:
                    conn.close()
                if fate == "drop":
                    self.close_connection = True
                    return
                self.send_response_only(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fates(self, fate: str) -> list[tuple[str, str]]:
        """The requests that met ``fate``."""
        with self._lock:
            return [(m, p) for m, p, f in self.log if f == fate]
