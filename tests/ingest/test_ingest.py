"""`vidsearch ingest` on one machine and on a local Ray instance: same store, failures named, kills survived, the
keyframe cache written by the driver only."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from vidsearch import __version__ as VERSION
from vidsearch.cli import main as cli
from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import generate_library
from vidsearch.ingest.job import ingest
from vidsearch.ingest.stages import plan, store_keyframes
from vidsearch.model.source import ModelSource
from vidsearch.store.store import Store
from vidsearch.video.cache import DATABASE, CacheDatabase, VideoEntry, build_cache, open_cache

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


def test_ray_refuses_a_node_with_another_vidsearch_in_one_line(videos, ray_instance, tmp_path, monkeypatch, capsys):
    import vidsearch

    monkeypatch.setattr(vidsearch, "__version__", "0.0.1")  # this process's; the Ray workers import the real one
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", "auto"])
    error = capsys.readouterr().err
    node = ray_instance.get_runtime_context().get_node_id()[:12]
    assert code == 2, error
    assert re.fullmatch(rf"vidsearch ingest: error: node {node} \(\S+\) runs vidsearch {re.escape(VERSION)}, this "
                        rf"machine 0\.0\.1: install the same version on every node\n", error), error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value, message", [
    ("sources", "0123456789abcdef", "runs other vidsearch {version} sources \\(\\w{{16}}, this machine "
                                    "0123456789abcdef\\): install the same vidsearch on every node"),
    ("ffmpeg", "libavcodec 1.2.3", "decodes with libavcodec [\\d.]+, this machine with libavcodec 1\\.2\\.3: keyframes "
                                   "could differ; install the same PyAV on every node"),
])
def test_ray_refuses_a_node_with_other_sources_or_another_ffmpeg(videos, ray_instance, tmp_path, monkeypatch, capsys,
                                                                 field, value, message):
    from vidsearch.ingest import raydata

    real = raydata._sources_and_ffmpeg()
    monkeypatch.setattr(raydata, "_sources_and_ffmpeg", lambda: {**real, field: value})  # the driver's; workers: real
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", "auto"])
    error = capsys.readouterr().err
    node = ray_instance.get_runtime_context().get_node_id()[:12]
    assert code == 2, error
    assert re.fullmatch(rf"vidsearch ingest: error: node {node} \(\S+\) {message.format(version=re.escape(VERSION))}\n",
                        error), error
    assert list(tmp_path.iterdir()) == []


def files_under(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `root`: relative path → (size, mtime in ns, sha256)."""
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns,
                                          hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(root.rglob("*")) if path.is_file()}


def entries_and_frames(cache_dir: Path) -> tuple[dict[str, dict], dict[str, bytes]]:
    """A cache's entries (all fields) and its keyframe files' bytes, by name."""
    cache = open_cache(cache_dir)
    entries = {entry.id: asdict(entry) for entry in cache.entries.values()}
    frames = {name: (cache_dir / name).read_bytes() for entry in entries.values() for name in entry["frames"]}
    return entries, frames


def test_keyframe_tasks_write_no_cache_and_the_driver_stores_what_they_return(local, videos, tmp_path):
    raydata = pytest.importorskip("vidsearch.ingest.raydata")
    reference, _ = local
    job = plan([videos], cache_dir=tmp_path / "cache", store_dir=tmp_path / "store", config=CONFIG, fingerprint="")
    items = [raydata.for_workers(item) for item in job.items]
    assert all(str(tmp_path) not in json.dumps(item) for item in items), items  # a worker is not told where it is
    before = files_under(tmp_path)
    batch = raydata._keyframes_task({"item": np.array([json.dumps(item) for item in items], dtype=object)},
                                    timeout_s=60.0)
    assert files_under(tmp_path) == before  # the task and its decoder processes wrote nothing

    videos_out = [json.loads(text) for text in batch["video"]]
    jpegs = {video["id"]: raydata._unpack(packed, video["sizes"]) for video, packed in zip(videos_out,
                                                                                          batch["jpegs"])}
    expected_entries, expected_frames = entries_and_frames(reference / "cache")
    assert {video["id"]: asdict(VideoEntry.from_json(video["entry"])) for video in videos_out} == expected_entries
    assert {name: jpeg for video in videos_out for name, jpeg in zip(video["entry"]["frames"], jpegs[video["id"]])} \
        == expected_frames  # the bytes the one-machine path stored
    assert {video["id"]: video["error"]["code"] for video in videos_out if video["status"] != "ok"} == FAILED

    database = CacheDatabase(job.cache / DATABASE)
    for video in videos_out:
        store_keyframes(job.cache, database, video, jpegs[video["id"]])
    assert entries_and_frames(job.cache) == (expected_entries, expected_frames)


def test_ray_ingest_reads_cached_keyframes_and_stores_only_new_ones(local, videos, ray_instance, tmp_path):
    reference, _ = local
    shutil.copytree(reference / "cache", tmp_path / "cache")  # 6 videos cached; the 2 failed ones are tried again
    cached = {name: stat for name, stat in files_under(tmp_path / "cache").items() if name.startswith("frames/")}
    report = ingest([videos], store_dir=tmp_path / "store", cache_dir=tmp_path / "cache", source=SOURCE,
                    config=CONFIG, ray_address="auto", batch_videos=2)
    assert (report.videos_added, sorted(code for *_, code, _ in report.failed)) == (6, sorted(FAILED.values()))
    assert_same_store(tmp_path / "store", reference / "store")
    assert {name: stat for name, stat in files_under(tmp_path / "cache").items() if name.startswith("frames/")} \
        == cached  # the cached frames were read, not written again
    assert entries_and_frames(tmp_path / "cache") == entries_and_frames(reference / "cache")


def test_a_full_disk_on_the_driver_stops_a_ray_job_in_one_line_at_its_last_version(videos, ray_instance, tmp_path,
                                                                                   monkeypatch, capsys):
    raydata = pytest.importorskip("vidsearch.ingest.raydata")
    stored: list[str] = []

    def full_at_the_fourth(root, database, video, jpegs):
        if len(stored) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        store_keyframes(root, database, video, jpegs)
        stored.append(video["status"])

    monkeypatch.setattr(raydata, "store_keyframes", full_at_the_fourth)
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", "auto", "--batch-videos", "1"])
    captured = capsys.readouterr()
    assert code == 1, captured
    line = "vidsearch ingest: error: No space left on device: free some space, then run it again"
    assert captured.err.splitlines()[-1] == line, captured.err  # before it: Ray's log lines only
    assert captured.err.count("vidsearch ingest") == 1 and "OSError" not in captured.err, captured.err
    assert "ingested" not in captured.out
    published = stored.count("ok")  # a version for each video, right after its keyframes were stored
    assert (Store.open(tmp_path / "store").version, len(Store.open(tmp_path / "store"))) == (published, published)
    assert open_cache(tmp_path / "cache").count() == 3


@pytest.fixture
def two_nodes():
    """A Ray cluster of two nodes on this machine, this process its driver, connected to the head: the head with no
    CPU (so every keyframe task and the encoder actor run on the other node; only the tasks that read cached
    keyframes, which ask for none, run on the driver's node), the other node with 2. Runs last in this module: the
    module's local instance is shut down first."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        cluster.add_node(num_cpus=2)
        cluster.connect()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_ingest_over_two_nodes_gives_the_one_machine_store_and_cache(local, videos, two_nodes, tmp_path,
                                                                         capsys):
    import ray

    reference, _ = local
    assert sorted(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]) == [0, 2]
    assert ray.get_runtime_context().get_node_id() == two_nodes.head_node.node_id
    build_cache(sorted(videos.glob("syn*.mp4"))[:3], tmp_path / "cache", CONFIG, workers=1)  # cached: read on the head
    code = cli(["ingest", str(videos), "--store", str(tmp_path / "store"), "--frames", str(tmp_path / "cache"),
                *MODEL, "--ray", two_nodes.address, "--batch-videos", "2"])
    output = capsys.readouterr().out
    assert code == 1, output
    assert failures(output) == FAILED, output
    assert_same_store(tmp_path / "store", reference / "store")
    assert entries_and_frames(tmp_path / "cache") == entries_and_frames(reference / "cache")
