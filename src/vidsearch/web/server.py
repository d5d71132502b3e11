"""`vidsearch serve`: the site over one store in waitress, with the model and the store loaded once at start.

Slow clients (slowloris): waitress reads requests on one event loop and hands only complete requests to its
threads, so a slow client costs a connection, not a thread; what must be bounded is how many connections one client
holds and for how long. `ConnectionLimits` sets it: at most `per_address` connections from one address (extra ones
are closed on arrival, before anything is read); a request head (request line and headers) must arrive whole within
`header_timeout_s`; a connection idle for `idle_timeout_s` is closed; `total` connections in all (with poll(), not
select(), so more than 1024 descriptors work). Behind a reverse proxy (all connections from its address), the proxy
is exempt from `per_address` and should buffer requests itself (docs/security.md has an nginx recipe).
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

log = logging.getLogger(__name__)

TRUSTED_PROXY = "127.0.0.1"


@dataclass(frozen=True)
class ConnectionLimits:
    per_address: int = 32  # a browser opens about 6 per site; video seeking adds a few
    total: int = 1000
    header_timeout_s: float = 10.0
    idle_timeout_s: int = 30
    check_every_s: int = 1  # how often timeouts are looked at
    max_header_bytes: int = 32 * 1024


class GuardedChannel(HTTPChannel):
    """A connection that notes when its current request began to arrive, and is closed at once if its address
    already holds the server's per-address limit."""

    head_started: float | None = None

    def __init__(self, server: GuardedServer, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        self.peer = addr[0] if isinstance(addr, tuple) else str(addr)
        if server.over_limit(self.peer):
            self.will_close = True  # closed by the event loop's next turn, unread

    def received(self, data: bytes) -> bool:
        if self.request is None:
            self.head_started = time.monotonic()
        return super().received(data)

    def head_overdue(self, deadline: float) -> bool:
        """A request head began before `deadline` and is still incomplete."""
        request = self.request
        return (request is not None and not request.headers_finished and self.head_started is not None
                and self.head_started < deadline)


class GuardedServer(TcpWSGIServer):
    """waitress' TCP server with `ConnectionLimits` (the per-address cap and the request-head deadline)."""

    channel_class = GuardedChannel

    def __init__(self, application: Callable, *, limits: ConnectionLimits, exempt: frozenset[str] = frozenset(),
                 **kw: Any):
        self.limits, self.exempt = limits, exempt
        super().__init__(application, **kw)

    def over_limit(self, peer: str) -> bool:
        if peer in self.exempt:
            return False
        held = sum(1 for channel in list(self.active_channels.values()) if getattr(channel, "peer", None) == peer)
        if held > self.limits.per_address:
            log.warning("closed a connection from %s: it holds %d (limit %d)", peer, held - 1,
                        self.limits.per_address)
            return True
        return False

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections
        deadline = time.monotonic() - self.limits.header_timeout_s
        for channel in list(self.active_channels.values()):
            if isinstance(channel, GuardedChannel) and channel.head_overdue(deadline):
                channel.will_close = True


def build_server(app: Callable, *, host: str, port: int, threads: int, limits: ConnectionLimits = ConnectionLimits(),
                 https: bool = False, max_request_body_size: int = 1 << 30) -> GuardedServer:
    """The listening server (not yet running: `.run()`)."""
    _allow_descriptors(limits.total + 64)
    proxy = {"trusted_proxy": TRUSTED_PROXY, "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-for"}} \
        if https else {}
    return GuardedServer(app, limits=limits, exempt=frozenset({TRUSTED_PROXY}) if https else frozenset(),
                         host=host, port=port, threads=threads, ident="vidsearch",
                         max_request_body_size=max_request_body_size, connection_limit=limits.total,
                         channel_timeout=limits.idle_timeout_s, cleanup_interval=limits.check_every_s,
                         max_request_header_size=limits.max_header_bytes, asyncore_use_poll=True, **proxy)


def _allow_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def create_app(*, store_dir: str | Path, https: bool = False, model: str | Path | None = None):
    """Configure Django for the store, migrate its site database, load the store and its model (or the exported
    model directory `model`); the WSGI app."""
    from vidsearch.web.setup import prepare_environment, start_django

    prepare_environment(store_dir, https=https)
    start_django()
    from django.core.wsgi import get_wsgi_application

    from vidsearch.web.library import engine, services

    if model is not None:
        engine.install(engine.Library.open(store_dir, model=model))
    engine.get_library()
    recovery = services.recover_uploads()
    if recovery != services.Recovery(0, 0, 0, 0):
        log.warning("uploads interrupted by the last stop: %d resumed, %d completed, %d failed; %d orphan file(s) "
                    "removed", recovery.resumed, recovery.completed, recovery.failed, recovery.orphans_removed)
    return get_wsgi_application()


def serve(*, store_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          https: bool = False, model: str | Path | None = None) -> None:
    from vidsearch.web.library.middleware import body_limit

    app = create_app(store_dir=store_dir, https=https, model=model)
    server = build_server(app, host=host, port=port, threads=threads, https=https,
                          max_request_body_size=body_limit())
    log.info("serving %s on http://%s:%d/", Path(store_dir).resolve(), host, port)
    server.run()
