"""Slow clients (slowloris) on loopback against the server `vidsearch serve` builds: bounded in connections and time.

The attacker opens ATTACKERS connections from 127.0.0.2 and trickles one header byte per connection every
TRICKLE_S, never finishing a request; normal requests from 127.0.0.1 must all be answered meanwhile. The attack
stops by itself (after the normal requests, or MAX_ROUNDS trickles) and closes its sockets.
"""

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from vidsearch.web.server import ConnectionLimits, build_server

ATTACKERS = 150
TRICKLE_S = 0.5
MAX_ROUNDS = 60
NORMAL_REQUESTS = 10


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture
def serving():
    """serving(limits) -> port of a running server with those limits; stopped after the test."""
    servers = []

    def start(limits: ConnectionLimits) -> int:
        server = build_server(hello, host="127.0.0.1", port=0, threads=2, limits=limits)
        servers.append(server)
        threading.Thread(target=server.run, name="test-waitress", daemon=True).start()
        return server.effective_port

    yield start
    for server in servers:
        server.task_dispatcher.shutdown()
        server.close()


@dataclass
class Slowloris:
    port: int
    sockets: list[socket.socket] = field(default_factory=list)
    closed_by_server: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        for _ in range(ATTACKERS):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=("127.0.0.2", 0))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            self.sockets.append(sock)

    def trickle(self) -> None:
        """One header byte per open connection per round until stopped; counts connections the server closed."""
        for _ in range(MAX_ROUNDS):
            if not self.sockets or self.stop.wait(TRICKLE_S):
                break
            for sock in list(self.sockets):
                try:
                    sock.sendall(b"X")
                except OSError:
                    self.sockets.remove(sock)
                    self.closed_by_server += 1
        for sock in self.sockets:
            sock.close()

    def alive(self) -> int:
        return len(self.sockets)


def normal_request(port: int) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return response.status, response.read()


def test_normal_requests_are_answered_during_a_slowloris(serving):
    port = serving(ConnectionLimits())
    attack = Slowloris(port)
    attack.open()
    trickling = threading.Thread(target=attack.trickle, daemon=True)
    trickling.start()
    try:
        answers = [normal_request(port) for _ in range(NORMAL_REQUESTS)]
    finally:
        attack.stop.set()
        trickling.join(timeout=30)
    assert answers == [(200, b"hello")] * NORMAL_REQUESTS


def test_a_slow_client_holds_few_connections_and_none_past_the_head_deadline(serving):
    limits = ConnectionLimits(per_address=20, header_timeout_s=1.0)
    port = serving(limits)
    attack = Slowloris(port)
    attack.open()
    trickling = threading.Thread(target=attack.trickle, daemon=True)
    trickling.start()
    trickling.join(timeout=MAX_ROUNDS * TRICKLE_S + 30)  # the server closes them all long before MAX_ROUNDS
    assert attack.closed_by_server == ATTACKERS, (attack.closed_by_server, attack.alive())
