"""Run a function over many tasks in child processes, each call with a time limit, so one bad input cannot stop a job.

A decoder fed a hostile or broken file may hang, run out of memory or crash the interpreter. Each worker here is a
fresh interpreter (`python -m vidsearch.video.workers module:function`) serving one task at a time: a JSON line in
on stdin, a JSON line out. Fresh interpreters inherit no threads, locks or `__main__` from the caller, so this works
the same from the CLI, a script, a test or a web process; and nothing the children send back is unpickled. A worker
that exceeds the time limit is killed; one that dies is noticed by its closed pipe; either way the task is reported
as failed and a fresh worker takes the next task.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """One task's result, or why there is none: `failure` is 'timeout', 'crashed' or 'error', `detail` says more."""

    task: Any
    result: Any = None
    failure: str | None = None
    detail: str = ""


@dataclass
class _Worker:
    process: subprocess.Popen
    task: Any = None
    deadline: float = 0.0


def run_isolated(fn: Callable[[Any], Any], tasks: Iterable[Any], *, workers: int, timeout_s: float,
                 nice: int = 0) -> Iterator[Outcome]:
    """fn(task) for every task in `workers` child processes, yielding outcomes in completion order.

    `fn` must be importable by name (a module-level function); tasks and results must be JSON values, tasks not None.
    `nice` > 0 lowers the children's CPU priority (a web server's background work yields to its requests).
    """
    target = f"{fn.__module__}:{fn.__qualname__}"
    pending = iter(tasks)
    start = functools.partial(_start, target, nice)
    pool = [start() for _ in range(max(1, workers))]
    try:
        for worker in pool:
            _assign(worker, pending, timeout_s)
        while busy := [worker for worker in pool if worker.task is not None]:
            yield from _next_outcomes(pool, busy, start, pending, timeout_s)
    finally:
        for worker in pool:
            _stop(worker)


class IsolatedWorker:
    """One child process that runs fn(task) for task after task, so what it loads (a model, a library) is loaded once.

    The same isolation as `run_isolated`: a task that passes the time limit or kills the child costs that child, and
    the next task starts a fresh one. Tasks are run one at a time (callers on several threads take turns). The child
    ends when this process does (its stdin closes) or on `close`.
    """

    def __init__(self, fn: Callable[[Any], Any], *, timeout_s: float, nice: int = 0):
        self._start = functools.partial(_start, f"{fn.__module__}:{fn.__qualname__}", nice)
        self._timeout_s = timeout_s
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    def run(self, task: Any) -> Outcome:
        with self._lock:
            if self._worker is None or self._worker.process.poll() is not None:
                self._worker = self._start()
            worker = self._worker
            _assign(worker, iter([task]), self._timeout_s)
            outcome = None
            while outcome is None:
                readable, _, _ = select.select([worker.process.stdout], [], [],
                                               max(0.0, worker.deadline - time.monotonic()))
                outcome = _collect(worker) if readable else _expired(worker, self._timeout_s)
            if outcome.failure in {"timeout", "crashed"}:
                self._worker = None
            return outcome

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                _stop(self._worker)
                self._worker = None


def _next_outcomes(pool: list[_Worker], busy: list[_Worker], start: Callable[[], _Worker], pending: Iterator[Any],
                   timeout_s: float) -> Iterator[Outcome]:
    """Wait until a busy worker answers or passes its deadline; report it and give it (or its successor) more work."""
    wait_s = max(0.0, min(worker.deadline for worker in busy) - time.monotonic())
    readable, _, _ = select.select([worker.process.stdout for worker in busy], [], [], wait_s)
    for worker in busy:
        outcome = _collect(worker) if worker.process.stdout in readable else _expired(worker, timeout_s)
        if outcome is None:
            continue
        if outcome.failure in {"timeout", "crashed"}:
            index = pool.index(worker)
            worker = pool[index] = start()
        yield outcome
        _assign(worker, pending, timeout_s)


def _assign(worker: _Worker, pending: Iterator[Any], timeout_s: float) -> None:
    worker.task = next(pending, None)
    if worker.task is not None:
        worker.deadline = time.monotonic() + timeout_s
        try:
            worker.process.stdin.write(json.dumps(worker.task) + "\n")
            worker.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone: its closed stdout reports the task as crashed


def _collect(worker: _Worker) -> Outcome:
    task, worker.task = worker.task, None
    line = worker.process.stdout.readline()
    if not line:
        _stop(worker)
        return Outcome(task, failure="crashed", detail=f"the worker died (exit code {worker.process.returncode})")
    reply = json.loads(line)
    if "error" in reply:
        return Outcome(task, failure="error", detail=reply["error"])
    return Outcome(task, result=reply["result"])


def _expired(worker: _Worker, timeout_s: float) -> Outcome | None:
    if time.monotonic() < worker.deadline:
        return None
    task, worker.task = worker.task, None
    _stop(worker)
    log.warning("killed a worker after %g s on %s", timeout_s, task)
    return Outcome(task, failure="timeout", detail=f"no result within {timeout_s:g} s")


def _start(target: str, nice: int = 0) -> _Worker:
    command = [sys.executable, "-m", "vidsearch.video.workers", target, str(int(nice))]
    return _Worker(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))


def _stop(worker: _Worker) -> None:
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait()
    worker.process.stdin.close()
    worker.process.stdout.close()


def _serve(target: str, nice: int = 0) -> None:
    """The child's loop: one task line in, one reply line out, until stdin closes. Stray prints go to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops its workers
    if nice > 0:
        os.nice(nice)
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        try:
            reply = {"result": fn(json.loads(line))}
        except Exception as error:  # reported to the parent, which decides what a failure means
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
