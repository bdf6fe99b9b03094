"""A local HTTP mirror for the ``rnnzoo data`` tests: serves files from memory on
127.0.0.1 (a random port, in a thread), and can spoil them on request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: how a path is served: whole, with one byte changed, cut short (the Content-Length
#: of the whole file, then half of it and a closed connection), stalled (half, then
#: nothing until the test ends), too long (the file twice, no Content-Length), or
#: not found
MODES = ("ok", "corrupt", "short", "stall", "long", "404")


@dataclass
class Mirror:
    url: str
    #: URL path (``/FOLDER/FILE``) -> content
    files: dict[str, bytes]
    modes: dict[str, str] = field(default_factory=dict)
    #: the paths asked for, in order
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            mirror.requests.append(self.path)
            body = mirror.files.get(self.path)
            mode = mirror.modes.get(self.path, "ok")
            if body is None or mode == "404":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if mode != "long":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "corrupt":
                body = body[:-1] + bytes([body[-1] ^ 1])
            elif mode == "long":
                body = body * 2
            elif mode in ("short", "stall"):
                body = body[: len(body) // 2]
            self.wfile.write(body)
            self.wfile.flush()
            if mode == "stall":
                mirror.release.wait(30)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@contextmanager
def serve() -> Iterator[Mirror]:
    """A mirror at ``http://127.0.0.1:PORT``, stopped at the end of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Mirror("", {})))
    mirror = Mirror(f"http://127.0.0.1:{server.server_address[1]}", {})
    server.RequestHandlerClass = _handler(mirror)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        mirror.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
