"""Login throttling: failed logins counted per account and per client address in Django's cache, and one password
check at a time.

Why the cache and not a package such as django-axes: `vidsearch serve` is one process, so its local-memory cache
counts every attempt exactly, and nothing is written to the site database per attempt (SQLite has one writer, which
the upload jobs and sessions need; a login flood must not queue behind or in front of them). Counters live as long
as the lockout and are lost on restart, which only shortens a lockout.

After ACCOUNT_FAILURES failed logins for one user name, or ADDRESS_FAILURES from one address, further attempts are
refused without checking the password until LOCKOUT_S seconds have passed since the last failure, even with the right
password. A success forgets its account's failures (not its address's: a known account must not reset a guesser's
count).

Password hashing (PBKDF2, about a second of CPU at Django's default cost) runs for at most one login at a time: a
login that finds another one being checked is answered "busy" at once instead of holding a request thread, so
parallel login loops cannot take the CPU and the threads that searches need.

Likewise, at most VIDSEARCH_CLIP_DECODES searches by an example clip decode at once (each in a child process with a
time limit, holding its request thread meanwhile): one more is answered "busy" at once, so clips alone cannot take
every request thread.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from django.conf import settings
from django.core.cache import cache

ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
LOCKOUT_S = 15 * 60
_PREFIX = "vidsearch-login-failures"

_checking = threading.BoundedSemaphore(1)
_clip_lock = threading.Lock()
_clips_decoding = 0
clock = time.time  # the wall clock: counters are compared with it (tests replace it)


@dataclass(frozen=True)
class Attempt:
    """Who tries to log in: the cache keys of the account and of the address."""

    account: str
    address: str

    @classmethod
    def of(cls, username: str, address: str) -> Attempt:
        name = hashlib.sha256(username.casefold().encode()).hexdigest()  # any text, a safe cache key
        return cls(f"{_PREFIX}:account:{name}", f"{_PREFIX}:address:{address}")

    def locked_for(self) -> float:
        """Seconds until this account and address may try again; 0 when they may now."""
        now = clock()
        waits = [until - now for key, limit in self._limits() for count, until in [_failures(key, now)]
                 if count >= limit]
        return max(waits, default=0.0)

    def failed(self) -> None:
        now = clock()
        for key, _ in self._limits():
            count, _ = _failures(key, now)
            cache.set(key, (count + 1, now + LOCKOUT_S), timeout=LOCKOUT_S)

    def succeeded(self) -> None:
        cache.delete(self.account)

    def _limits(self) -> list[tuple[str, int]]:
        return [(self.account, ACCOUNT_FAILURES), (self.address, ADDRESS_FAILURES)]


def _failures(key: str, now: float) -> tuple[int, float]:
    """(failures, end of their lockout) of a cache key; (0, now) once the lockout has ended."""
    count, until = cache.get(key, (0, now))
    return (count, until) if until > now else (0, now)


@contextmanager
def password_check_slot() -> Iterator[bool]:
    """True inside when this thread may check a password now; False when another check is running."""
    acquired = _checking.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            _checking.release()


@contextmanager
def clip_decoding_slot() -> Iterator[bool]:
    """True inside when this thread may decode a query clip now; False when VIDSEARCH_CLIP_DECODES others are."""
    global _clips_decoding
    with _clip_lock:
        acquired = _clips_decoding < settings.VIDSEARCH_CLIP_DECODES
        _clips_decoding += acquired
    try:
        yield acquired
    finally:
        if acquired:
            with _clip_lock:
                _clips_decoding -= 1
