"""Search latency of `vidsearch serve` while it is attacked on loopback: alone (the baseline), under a slowloris, and
under login floods.

One server child process (waitress, production settings, `--threads` threads) over a store of `--videos` random rows
of the tiny model (`vidsearch.bench.serve`); `--searches` sequential `GET /api/search` (distinct queries), timed from
send to the end of the answer, a failure (no answer within 10 s) counting 10 s:

- `alone`: nothing else runs;
- `slowloris`: `--slow-clients` connections from 127.0.0.2 each send the start of a request, then one header byte a
  second, never finishing it;
- `login_flood_one_address`: 4 loops (GET the login page, POST a wrong password for a real account) from 127.0.0.1;
- `login_flood_many_addresses`: the same loops spread over 200 source addresses (127.0.1.1-200).

Summary ratio: the largest median latency under an attack / the median alone.
"""

from __future__ import annotations

import argparse
import http.client
import re
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from vidsearch.bench import load, serve
from vidsearch.bench.common import emit, median, summary

SEARCH_TIMEOUT_S = 10.0
USER = "flooded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=40, help="timed searches per condition")
    parser.add_argument("--slow-clients", type=int, default=150)
    parser.add_argument("--threads", type=int, default=4, help="the server's request threads")


def run(args: argparse.Namespace) -> None:
    if args.quick:
        args.videos, args.searches, args.slow_clients = 200, 10, 150
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-attacks-") as workdir:
        store = serve.build_library(Path(workdir), videos=args.videos, source=serve.MODELS["tiny"])  # as in RESULTS.md
        load.create_user(store, USER)
        with load.running_server(store, threads=args.threads, workdir=Path(workdir)) as base:
            port = int(base.rsplit(":", 1)[1])
            conditions = [("alone", None), ("slowloris", _slowloris(args.slow_clients)),
                          ("login_flood_one_address", _login_flood(["127.0.0.1"])),
                          ("login_flood_many_addresses", _login_flood([f"127.0.1.{i}" for i in range(1, 201)]))]
            medians = {name: _measure(name, port, attack, args, seed=seed)
                       for seed, (name, attack) in enumerate(conditions)}
    worst = max(value for name, value in medians.items() if name != "alone")
    summary("attacks", worst / medians["alone"], median_ms={k: round(v * 1000, 1) for k, v in medians.items()})


def _measure(name: str, port: int, attack: Callable[[int, threading.Event, dict], None] | None,
             args: argparse.Namespace, *, seed: int) -> float:
    stop, counts = threading.Event(), {}
    thread = threading.Thread(target=attack, args=(port, stop, counts), daemon=True) if attack else None
    if thread:
        thread.start()
        stop.wait(2.0)  # the attack is under way before the first timed search
    try:
        times, failed = _searches(port, args.searches, seed=seed)
    finally:
        stop.set()
        if thread:
            thread.join(timeout=60)
    emit({"condition": name, "median_ms": round(median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
          "failed": failed, "searches": len(times), **counts})
    return median(times)


def _searches(port: int, count: int, *, seed: int) -> tuple[list[float], int]:
    times, failed = [], 0
    for text in serve.queries(count, seed=seed):
        started = time.perf_counter()
        try:
            status = _request(port, "GET", f"/api/search?q={text.replace(' ', '+')}&k=10")[0]
        except OSError:
            status = None
        times.append(time.perf_counter() - started)
        failed += status != 200
    return times, failed


def _request(port: int, method: str, path: str, *, source: str = "127.0.0.1", body: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SEARCH_TIMEOUT_S, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _slowloris(clients: int) -> Callable[[int, threading.Event, dict], None]:
    def attack(port: int, stop: threading.Event, counts: dict) -> None:
        with _open_slowly(port, clients) as sockets:
            counts["slow_clients_opened"] = len(sockets)
            while not stop.wait(1.0):
                for sock in list(sockets):
                    try:
                        sock.sendall(b"X")
                    except OSError:
                        sockets.remove(sock)
            counts["slow_clients_left_open"] = len(sockets)
    return attack


@contextmanager
def _open_slowly(port: int, clients: int) -> Iterator[list[socket.socket]]:
    sockets = []
    try:
        for _ in range(clients):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                sockets.append(sock)
            except OSError:
                pass
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _login_flood(sources: list[str]) -> Callable[[int, threading.Event, dict], None]:
    def attack(port: int, stop: threading.Event, counts: dict) -> None:
        answers: list[int] = []
        loops = [threading.Thread(target=_login_loop, args=(port, stop, sources[k::4] or sources, answers))
                 for k in range(4)]
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join()
        counts["login_answers"] = {str(status): answers.count(status) for status in sorted(set(answers))}
    return attack


def _login_loop(port: int, stop: threading.Event, sources: list[str], answers: list[int]) -> None:
    attempt = 0
    while not stop.is_set():
        source = sources[attempt % len(sources)]
        attempt += 1
        try:
            answers.append(_wrong_login(port, source, attempt))
        except (OSError, AttributeError):
            answers.append(0)


def _wrong_login(port: int, source: str, attempt: int) -> int:
    _, headers, page = _request(port, "GET", "/accounts/login/", source=source)
    cookie = re.search(r"csrftoken=([^;]+)", headers.get("Set-Cookie", "")).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={USER}&password=wrong{attempt}"
    return _request(port, "POST", "/accounts/login/", source=source, body=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded",
                             "Cookie": f"csrftoken={cookie}"})[0]
