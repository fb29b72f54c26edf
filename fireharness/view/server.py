"""The viewer's local web server (stdlib ``http.server``): the page, its script, and JSON under /api/.

No URL names a file: the app's three static files are looked up by exact name, and every data
request names a run by its number in the ``Catalog``, which only ever read files under its roots.
Responses carry a Content-Security-Policy that allows no inline script, as a second guard behind
the app's escaping (it builds every element with ``textContent``).
"""
from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fireharness.view.sources import LeaderboardInputError

from .catalog import Catalog, to_json

STATIC_DIR = Path(__file__).parent / "static"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css; charset=utf-8")}
# The server's mode.js; an export writes its own (window.FH_MODE = "static").
MODE_JS = b'window.FH_MODE = "server";\n'
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'"


def api(catalog: Catalog, parts: list, query: dict):
    """The payload for /api/<parts>; the export writes the same payloads to files."""
    def q(name):
        v = query.get(name, [None])[0]
        return int(v) if v not in (None, "") and v.lstrip("-").isdigit() else None

    kind = parts[0] if parts else ""
    if kind == "runs" and len(parts) == 1:
        catalog.refresh()
        return catalog.runs_payload()
    if kind == "rows" and len(parts) == 2:
        catalog.refresh()
        if q("gen") is None:  # a whole run: the bytes kept from the last time it was asked for
            return catalog.rows_json(parts[1])
        return catalog.rows_payload(parts[1], gen=q("gen"), count=q("count"))
    if kind == "episode" and len(parts) == 3:
        return catalog.episode(parts[1], parts[2])
    if kind == "compare" and len(parts) == 3:
        return catalog.compare(parts[1], parts[2])
    if kind == "leaderboard" and len(parts) == 1:
        return catalog.leaderboard_payload()
    if kind == "experiment" and len(parts) == 2:
        return catalog.experiment(parts[1])
    raise KeyError("no such page")


class Handler(BaseHTTPRequestHandler):
    catalog: Catalog = None
    server_version = "fireharness-view"

    def log_message(self, fmt, *args):  # quiet: the terminal shows the URL, not every request
        pass

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status: int, message: str) -> None:
        self.send(status, to_json({"error": message}), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if ".." in path or "\\" in path or "\x00" in path:
            return self.error(HTTPStatus.BAD_REQUEST, "paths with '..' are refused")
        if path in STATIC:
            name, ctype = STATIC[path]
            return self.send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), ctype)
        if path == "/favicon.ico":
            return self.send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path == "/mode.js":
            return self.send(HTTPStatus.OK, MODE_JS, "text/javascript; charset=utf-8")
        if path == "/plot.png":
            png = self.catalog.plot_png()
            return self.send(HTTPStatus.OK, png, "image/png") if png else self.error(HTTPStatus.NOT_FOUND, "no runs")
        if path.startswith("/api/"):
            parts = [p for p in path[len("/api/"):].split("/") if p]
            try:
                payload = api(self.catalog, parts, parse_qs(url.query))
            except (KeyError, ValueError) as e:  # no such run or episode (ValueError: not a number)
                return self.error(HTTPStatus.NOT_FOUND, str(e.args[0] if e.args else e))
            except LeaderboardInputError as e:
                return self.error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
            body = payload if isinstance(payload, bytes) else to_json(payload)
            return self.send(HTTPStatus.OK, body, "application/json; charset=utf-8")
        return self.error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self):  # the viewer changes nothing
        self.error(HTTPStatus.METHOD_NOT_ALLOWED, "the viewer is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST


def make_server(catalog: Catalog, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("CatalogHandler", (Handler,), {"catalog": catalog})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
