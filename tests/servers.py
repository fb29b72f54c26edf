"""A real HTTP server on 127.0.0.1 playing SerpAPI or MediaWiki, with scriptable faults.

``FakeAPI(answer)`` serves ``answer(path, params) -> Reply``; ``api.faults`` is a queue of Replies
served first, one per request, to script "429 then 200", "two 503s then 200", a slow response (for
timeouts), a dropped connection or a body that is not JSON. Every request's (path, params) is kept
in ``api.requests`` so tests can count attempts and check what the client sent.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list -> JSON; str -> sent as is (e.g. malformed JSON)
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering (client timeouts)
    drop: bool = False  # close the connection without answering


class FakeAPI:
    def __init__(self, answer: Callable[[str, dict], Reply]):
        self.answer = answer
        self.faults: deque[Reply] = deque()
        self.requests: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                with api._lock:
                    api.requests.append((url.path, params))
                    reply = api.faults.popleft() if api.faults else None
                if reply is None:
                    reply = api.answer(url.path, params)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): fine

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A localhost URL where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def json_reply(body: object, status: int = 200, **headers) -> Reply:
    return Reply(status=status, body=body, headers=headers)


def no_answer(path: str, params: dict) -> Optional[Reply]:
    return Reply(status=404, body={"error": f"no fixture for {path} {params}"})
