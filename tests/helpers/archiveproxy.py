"""A real HTTP proxy between apt and the Debian archive, for the fetch tests.

apt and apt-helper go through it when ``http_proxy`` names it, as they would through a
company's proxy or apt-cacher-ng. It relays every request to the archive and counts it; it keeps
each ``.deb`` it relayed on disk (under the test kernels cache), so a package crosses the network
once per machine however many tests fetch it cold. It can also refuse every request (an archive
that cannot be reached: apt hears ``503``) or only the packages, and hold one ``.deb`` halfway
(a download in progress, for a test to kill its fetch at that moment).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import posixpath
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ARCHIVE_HOST = "deb.debian.org"
_CHUNK = 1 << 20
_RELAYED_HEADERS = ("Content-Type", "Last-Modified", "ETag")


class ArchiveProxy:
    def __init__(self, deb_cache: Path, *, refuse: bool = False, refuse_debs: bool = False) -> None:
        self.deb_cache = deb_cache
        self.refuse = refuse
        self.refuse_debs = refuse_debs  # the lists come through, the packages do not
        self.requests: list[str] = []
        self.hold_name: str | None = None
        self.hold_after = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ArchiveProxy:
        self.deb_cache.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def mark(self) -> int:
        """A point in the request log, for ``debs(since=...)``."""
        with self._lock:
            return len(self.requests)

    def debs(self, since: int = 0) -> Counter[str]:
        """How many times each package file was asked for (since a ``mark``)."""
        with self._lock:
            paths = [urllib.parse.urlsplit(r).path for r in self.requests[since:]]
        names = (urllib.parse.unquote(posixpath.basename(p)) for p in paths)
        return Counter(n for n in names if n.endswith(".deb"))

    def hold(self, name_part: str, after: int) -> None:
        """Stop sending the first ``.deb`` whose name holds ``name_part`` after ``after`` bytes,
        until ``release`` is set (``held`` is set when it stops)."""
        self.hold_name, self.hold_after = name_part, after

    def record(self, url: str) -> None:
        with self._lock:
            self.requests.append(url)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-reply (a fetch killed on purpose) is no news


def _handler(proxy: ArchiveProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            proxy.record(self.path)
            url = urllib.parse.urlsplit(self.path)
            if proxy.refuse or url.hostname != ARCHIVE_HOST:
                self._empty(503, "Service Unavailable")
                return
            if url.path.endswith(".deb"):
                if proxy.refuse_debs:
                    self._empty(503, "Service Unavailable")
                    return
                self._deb(url.path)
            else:
                self._relay(url.path)

        def _empty(self, status: int, reason: str) -> None:
            self.send_response(status, reason)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _relay(self, path: str, keep: Path | None = None) -> None:
            upstream = http.client.HTTPConnection(ARCHIVE_HOST, timeout=120)
            try:
                upstream.request("GET", path, headers={"User-Agent": "ktstr-tests"})
                response = upstream.getresponse()
                length = response.getheader("Content-Length")
                self.send_response(response.status, response.reason)
                for name in _RELAYED_HEADERS:
                    value = response.getheader(name)
                    if value is not None:
                        self.send_header(name, value)
                if length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                tmp = (
                    keep.with_name(f".{keep.name}.{os.getpid()}.{threading.get_ident()}")
                    if keep
                    else None
                )
                with open(tmp, "wb") if tmp else contextlib.nullcontext() as out:
                    while chunk := response.read(_CHUNK):
                        self.wfile.write(chunk)
                        if out is not None:
                            out.write(chunk)
                if tmp is not None and keep is not None and response.status == 200:
                    os.replace(tmp, keep)
            finally:
                upstream.close()

        def _deb(self, path: str) -> None:
            name = urllib.parse.unquote(posixpath.basename(path))
            digest = hashlib.sha256(path.encode()).hexdigest()[:16]
            cached = proxy.deb_cache / f"{digest}-{name}"
            if not cached.is_file():
                self._relay(path, keep=cached)
                return
            size = cached.stat().st_size
            self.send_response(200, "OK")
            self.send_header("Content-Type", "application/vnd.debian.binary-package")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            hold = (
                proxy.hold_name is not None and proxy.hold_name in name and not proxy.held.is_set()
            )
            sent = 0
            with open(cached, "rb") as f:
                while chunk := f.read(_CHUNK):
                    if hold and sent + len(chunk) > proxy.hold_after:
                        proxy.held.set()
                        proxy.release.wait()
                        hold = False
                    self.wfile.write(chunk)
                    sent += len(chunk)

    return Handler


@contextlib.contextmanager
def refusing_proxy(tmp: Path) -> Iterator[ArchiveProxy]:
    """A proxy that answers every request with 503: an archive that cannot be reached, which
    still counts how often it was asked."""
    with ArchiveProxy(tmp / "unused", refuse=True) as proxy:
        yield proxy
