"""A writer killed at random points, and I/O errors at every write, fsync and rename, never cost a published version."""

import errno
import os
import random
import signal

import pytest

from vidsearch import fsutil
from vidsearch.store import store as st
from vidsearch.store.store import Store

KILLS = 60
MAX_KILL_POINT = 120  # an add makes ≈ 30 write/fsync/rename calls: kills land in the first four publishes


def _die_at_io_call(kill_at: int) -> None:
    """From now on (in this forked child), SIGKILL this process at its `kill_at`-th write, fsync or rename."""
    calls = 0
    for owner, name in ((fsutil, "write_all"), (os, "fsync"), (os, "replace")):
        original = getattr(owner, name)

        def counted(*args, original=original, **kwargs):
            nonlocal calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, name, counted)


def _child(path, trial: int, kill_at: int, report_fd: int, add_videos) -> None:
    rng = random.Random(trial)
    _die_at_io_call(kill_at)
    for step in range(10_000):
        version = add_videos(path, [f"t{trial}-{step}-{i}" for i in range(rng.randint(1, 3))])
        if rng.random() < 0.3:
            victims = sorted(set(Store.open(path).rows.video_id))[:2]
            version = st.remove(path, video_ids=victims)
        os.write(report_fd, f"{version}\n".encode())


def _run_until_killed(path, trial: int, kill_at: int, add_videos) -> int:
    """Fork a writer that is SIGKILLed at its `kill_at`-th I/O call; return the last version it reported (0: none)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read_fd)
            _child(path, trial, kill_at, write_fd, add_videos)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reports:
        versions = [int(line) for line in reports.read().split()]
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"trial {trial}: exit status {status}"
    return versions[-1] if versions else 0


def test_writer_killed_at_every_kind_of_point_never_loses_a_published_version(tmp_path, helpers):
    """Kill points are chosen by progress (the N-th write, fsync or rename of the writer), never by time."""
    path = tmp_path / "store"
    published = helpers.add_videos(path, ["seed-video"])
    rng = random.Random(1234)
    interrupted = reported_any = 0
    for trial in range(KILLS):
        reported = _run_until_killed(path, trial, rng.randint(1, MAX_KILL_POINT), helpers.add_videos)
        reported_any += reported > 0
        published = max(published, reported)
        interrupted += any(name.endswith(".tmp") for name in os.listdir(path))
        store = Store.open(path, verify="full")
        assert store.version >= published, f"trial {trial}: version {published} was published, not in the store"
        helpers.assert_consistent(store)
        published = store.version
    assert reported_any >= KILLS // 2, f"only {reported_any} writers published before their kill"
    assert interrupted >= KILLS // 2, f"only {interrupted} kills left a write unfinished"


class Faults:
    """Raise EIO at the `fail_at`-th call of one I/O operation (0: never); count the calls."""

    def __init__(self, monkeypatch, operation: str, fail_at: int = 0):
        self.calls, self.fail_at = 0, fail_at
        owner, name = {"write": (fsutil, "write_all"), "fsync": (os, "fsync"), "replace": (os, "replace")}[operation]
        original = getattr(owner, name)

        def faulty(*args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                raise OSError(errno.EIO, f"injected {operation} error")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, faulty)


OPERATIONS = {
    "add": lambda h, path: h.add_videos(path, ["new"]),
    "remove": lambda h, path: st.remove(path, video_ids=["a"]),
    "compact": lambda h, path: st.compact(path, force=True),
    "write": lambda h, path: h.write_videos(path, ["other"]),
}


def _content(store) -> tuple:
    return store.version, tuple(store.rows.video_id), store.array("video_feature").tobytes()


def _baseline(helpers, path):
    helpers.add_videos(path, ["a", "b"])
    helpers.add_videos(path, ["c"])
    return _content(Store.open(path))


@pytest.mark.parametrize("operation", ["write", "fsync", "replace"])
@pytest.mark.parametrize("change", sorted(OPERATIONS))
def test_io_error_at_every_call_keeps_the_published_version(tmp_path, helpers, monkeypatch, operation, change):
    before = _baseline(helpers, tmp_path / "clean")
    with monkeypatch.context() as patch:
        counter = Faults(patch, operation)
        OPERATIONS[change](helpers, tmp_path / "clean")
    after = _content(Store.open(tmp_path / "clean"))
    assert counter.calls > 0
    for fail_at in range(1, counter.calls + 1):
        path = tmp_path / f"fail{fail_at}"
        _baseline(helpers, path)
        with monkeypatch.context() as patch:
            Faults(patch, operation, fail_at)
            with pytest.raises(OSError, match="injected"):
                OPERATIONS[change](helpers, path)
        store = Store.open(path, verify="full")
        assert _content(store) in (before, after), f"{operation} #{fail_at} during {change} left a mixed store"
        helpers.assert_consistent(store)
        helpers.add_videos(path, ["later"])  # the next writer works and cleans up
        assert not any(name.endswith(".tmp") for name in os.listdir(path))
