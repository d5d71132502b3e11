"""`vidsearch ingest` on one machine and on a local Ray instance: same store, failures named, kills survived."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidsearch.cli import main as cli
from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import generate_library
from vidsearch.ingest.job import ingest
from vidsearch.ingest.stages import plan
from vidsearch.model.source import ModelSource
from vidsearch.store.store import Store
from vidsearch.video.cache import open_cache

MODEL = ["--model", "vidsearch-tiny", "--random-weights", "--keyframes", "4", "--size", "64"]
SOURCE = ModelSource(backbone="vidsearch-tiny")
CONFIG = FrameConfig(frames=4, size=64)
FAILED = {"garbage": "unreadable", "empty": "empty"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six synthetic clips and two files no decoder can read."""
    root = tmp_path_factory.mktemp("ingest-library")
    generate_library(root / "lib", videos=6, seed=4, size=64, seconds=4.0, fps=4.0)
    (root / "lib" / "videos" / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a movie" * 50)
    (root / "lib" / "videos" / "empty.mp4").write_bytes(b"")
    return root / "lib" / "videos"


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    """The one-machine path through the CLI, in a fresh interpreter that reports whether Ray was imported."""
    root = tmp_path_factory.mktemp("ingest-local")
    script = "import sys; from vidsearch.cli import main; rc = main(sys.argv[1:]); print('ray imported:', 'ray' in " \
             "sys.modules); sys.exit(rc)"
    run = subprocess.run([sys.executable, "-c", script, "ingest", str(videos), "--store", str(root / "store"),
                          "--frames", str(root / "cache"), *MODEL, "--batch-videos", "2", "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr  # 1: some files failed
    return root, run.stdout


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def failures(output: str) -> dict[str, str]:
    return dict(re.findall(r"^  failed (\S+) \(.*\): (\w+):", output, re.MULTILINE))


def rows_and_features(store_dir: Path) -> tuple[list[tuple], np.ndarray]:
    """The store's rows (metadata) sorted by video and start, and their features in that order."""
    store = Store.open(store_dir)
    rows = [(r.video_id, r.start, r.end, r.category, r.thumbnail, r.captions)
            for r in map(store.row, range(len(store)))]
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1] or 0.0))
    return [rows[i] for i in order], store.array("video_feature")[order]


def assert_same_store(store_dir: Path, reference: Path) -> None:
    rows, features = rows_and_features(store_dir)
    expected_rows, expected = rows_and_features(reference)
    assert rows == expected_rows
    assert len(rows) == 6
    np.testing.assert_allclose(features, expected, atol=1e-6, rtol=0)


def test_one_machine_ingest_reports_failed_files_and_never_imports_ray(local):
    root, output = local
    assert failures(output) == FAILED, output
    assert "ray imported: False" in output
    assert Store.open(root / "store").version == 3  # 6 videos, a version every 2


def test_ray_ingest_gives_the_rows_metadata_and_features_of_one_machine(local, videos, ray_instance, tmp_path,
                                                                        capsys):
    reference, _ = local
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", "auto", "--batch-videos", "2"])
    output = capsys.readouterr().out
    assert code == 1, output
    assert failures(output) == FAILED, output
    assert_same_store(tmp_path / "store", reference / "store")
    assert Store.open(tmp_path / "store").info["frames"] == str((tmp_path / "cache").resolve())


def test_ray_without_ray_installed_says_which_extra_in_one_line(videos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    monkeypatch.delitem(sys.modules, "vidsearch.ingest.raydata", raising=False)
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), *MODEL, "--ray", "auto"])
    error = capsys.readouterr().err
    assert code == 2
    assert error == "vidsearch ingest: error: --ray needs Ray: pip install 'vidsearch[cluster]'\n"
    assert not (tmp_path / "store").exists()


class Stop(Exception):
    """Stands for the job being killed right after a store version was published."""


def test_a_job_stopped_after_a_version_leaves_it_and_a_rerun_does_only_what_is_missing(local, videos, tmp_path):
    reference, _ = local
    cache = reference / "cache"  # keyframes extracted already: this job only encodes and publishes

    def stop_at_the_first_version(version, report):
        raise Stop(version)

    with pytest.raises(Stop):
        ingest([videos], store_dir=tmp_path / "store", cache_dir=cache, source=SOURCE, config=CONFIG, batch_videos=2,
               on_publish=stop_at_the_first_version)
    stored = Store.open(tmp_path / "store")
    assert (stored.version, len(stored)) == (1, 2)
    fingerprint = SOURCE.load().fingerprint
    rest = plan([videos], cache_dir=cache, store_dir=tmp_path / "store", config=CONFIG, fingerprint=fingerprint)
    assert sorted(item["id"] for item in rest.items) == sorted({*failures_in(cache), *missing(stored, cache)})
    assert [item["id"] for item in rest.items if item["task"] is None] == sorted(missing(stored, cache))
    report = ingest([videos], store_dir=tmp_path / "store", cache_dir=cache, source=SOURCE, config=CONFIG,
                    batch_videos=2)
    assert (report.videos_added, report.videos_in_store, report.versions) == (4, 2, [2, 3])
    assert_same_store(tmp_path / "store", reference / "store")


def failures_in(cache: Path) -> set[str]:
    return {entry.id for entry in open_cache(cache).entries.values() if entry.status != "ok"}


def missing(store: Store, cache: Path) -> set[str]:
    return {entry.id for entry in open_cache(cache).ok()} - set(store.videos())


def ray_map_workers() -> dict[int, str]:
    """PID → title of this machine's Ray worker processes that run one of a dataset's map stages."""
    workers = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and ("_keyframes_task" in title or "_EncoderActor" in title):
            workers[int(pid)] = title.strip()
    return workers


@pytest.mark.slow
@pytest.mark.timeout(300)  # a job that cannot recover waits for the lost actor: fail in bounded time
def test_ray_workers_killed_mid_job_are_retried_and_every_video_lands_once(local, videos, ray_instance, tmp_path):
    reference, _ = local
    killed: dict[int, str] = {}

    def kill_map_workers_at_the_first_version(version, report):
        if version == 1:
            for pid, title in ray_map_workers().items():
                os.kill(pid, signal.SIGKILL)
                killed[pid] = title

    report = ingest([videos], store_dir=tmp_path / "store", cache_dir=tmp_path / "cache", source=SOURCE,
                    config=CONFIG, ray_address="auto", batch_videos=1, files_per_task=1,
                    on_publish=kill_map_workers_at_the_first_version)
    assert any("_EncoderActor" in title for title in killed.values()), killed
    assert (report.videos_added, sorted(code for *_, code, _ in report.failed)) == (6, sorted(FAILED.values()))
    assert report.versions == list(range(1, 7))
    assert_same_store(tmp_path / "store", reference / "store")


def test_ray_refuses_a_cluster_of_several_hosts_in_one_line(videos, ray_instance, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ray_instance, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}])
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", "auto"])
    error = capsys.readouterr().err
    assert code == 2
    assert error == ("vidsearch ingest: error: the Ray cluster has 2 nodes; ingest runs on one node for now (the "
                     "keyframe cache's SQLite database cannot be shared between hosts)\n")
    assert list(tmp_path.iterdir()) == []
