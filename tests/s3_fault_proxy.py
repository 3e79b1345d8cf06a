"""A fault-injecting HTTP proxy in front of an S3 server (moto's, tests/conftest.py): on a seeded share of
requests it answers 500 InternalError or 503 SlowDown, answers late, drops the connection (before or after the
request reached the server) or resets it in the middle of the response body; the rest pass through untouched.

    proxy = FaultProxy("http://127.0.0.1:5000", FaultSchedule(rate=0.1, seed=1)).start()
    client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)   # every request goes through the proxy
    proxy.stats()            # {"requests": 812, "faults": 80, "retries": 77, "by_kind": {...}}
    proxy.script(lambda r: r.method == "PUT", ["reset_body"])   # force faults on the next matching requests
    proxy.stop()

Retries are counted from the `amz-sdk-request: attempt=N` header botocore sends (N > 1 is a retry).
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# What a fault does. error_*: the server's answer is replaced (the request never reaches it); slow: the answer
# comes `slow_s` late; stall: `stall_s` late (past a client's read timeout); drop_before / drop_after: the
# connection is closed without an answer, before / after the server handled the request; reset_body: the headers
# and half the body are sent, then the connection is reset.
KINDS = ("error_500", "error_503", "slow", "drop_before", "drop_after", "reset_body")
ALL_KINDS = (*KINDS, "stall")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
ERROR_BODY = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def attempt(self) -> int:
        found = re.search(r"attempt=(\d+)", self.headers.get("amz-sdk-request", ""))
        return int(found.group(1)) if found else 1


@dataclass
class FaultSchedule:
    """Which requests get a fault: a share `rate` of those `applies` to, drawn from a seeded generator, of the
    `kinds` given; `script` forces faults on the next requests a predicate matches (targeted tests)."""

    rate: float = 0.1
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    slow_s: float = 0.3
    stall_s: float = 3.0
    applies: Callable[[Request], bool] = lambda request: True
    _random: random.Random = field(init=False)
    _scripted: list[tuple[Callable[[Request], bool], list[str]]] = field(default_factory=list)

    def __post_init__(self):
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use some of {ALL_KINDS}")
        self._random = random.Random(self.seed)

    def pick(self, request: Request) -> str | None:
        """The fault for `request`, or None (called under the proxy's lock: one draw per request, in order)."""
        for matches, kinds in self._scripted:
            if kinds and matches(request):
                return kinds.pop(0)
        if not self.applies(request) or self._random.random() >= self.rate:
            return None
        return self._random.choice(self.kinds)


class FaultProxy:
    """A threaded HTTP/1.1 proxy on a free loopback port forwarding to `upstream` through `schedule`."""

    def __init__(self, upstream: str, schedule: FaultSchedule | None = None):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.schedule = schedule or FaultSchedule(rate=0.0)
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, matches: Callable[[Request], bool], kinds: list[str]) -> None:
        """Force `kinds`, one each, on the next requests `matches` (before any drawn fault)."""
        with self.lock:
            self.schedule._scripted.append((matches, list(kinds)))

    def decide(self, request: Request) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            self.counts["retries"] += request.attempt > 1
            kind = self.schedule.pick(request)
            if kind:
                self.counts["faults"] += 1
                self.counts[f"fault:{kind}"] += 1
            return kind

    def recount(self, kind: str, instead: str) -> str:
        with self.lock:
            self.counts[f"fault:{kind}"] -= 1
            self.counts[f"fault:{instead}"] += 1
        return instead

    def stats(self) -> dict:
        with self.lock:
            counts = dict(self.counts)
        by_kind = {k.removeprefix("fault:"): v for k, v in counts.items() if k.startswith("fault:") and v}
        return {
            "requests": counts.get("requests", 0),
            "faults": counts.get("faults", 0),
            "retries": counts.get("retries", 0),
            "by_kind": by_kind,
        }

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up on a reset: nothing to report
        return None


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_FaultHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format, *args):  # the proxy is quiet; its counts say what happened
        return None

    def do_GET(self):
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _serve(self):
        body = self._request_body()
        request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        kind = self.proxy.decide(request)
        if kind == "drop_before":
            return self._reset()
        if kind in ("error_500", "error_503"):
            return self._error(int(kind[-3:]))
        status, headers, answer = self._forward(body)
        if kind == "reset_body" and (self.command == "HEAD" or len(answer) < 2):
            kind = self.proxy.recount(kind, "drop_after")  # no body to cut in two
        if kind == "drop_after":
            return self._reset()
        if kind in ("slow", "stall"):
            time.sleep(self.proxy.schedule.slow_s if kind == "slow" else self.proxy.schedule.stall_s)
        self._answer(status, headers, answer, cut=kind == "reset_body")

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            return response.status, response.getheaders(), answer
        finally:
            connection.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes, cut: bool = False) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and not (name.lower() == "content-length" and self.command != "HEAD"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return self._reset()
        self.wfile.write(body)

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()

    def _error(self, status: int) -> None:
        code, message = ERROR_BODY[status]
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        body = (body + "<RequestId>fault-proxy</RequestId></Error>").encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), without an answer or in the middle of one."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def open_uploads(client, bucket: str) -> list[str]:
    """Keys of the multipart uploads begun in `bucket` and neither completed nor aborted."""
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def unstamped_objects(client, bucket: str, stamp_name: str = "_fingerprint.json") -> list[str]:
    """Objects under an output's `.attempts/` that no stamp names: what a partial or abandoned publish left."""
    import json

    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    named = set()
    for key in (k for k in keys if k.endswith(f"/{stamp_name}")):
        stamp = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        named.add(f"{key.removesuffix(stamp_name)}{stamp['objects']}/")
    return [k for k in keys if "/.attempts/" in k and not any(k.startswith(prefix) for prefix in named)]
