"""The Ray Data executor: keyframes as CPU tasks, the model in an actor pool, this process (the driver) storing.

    files to extract → map_batches(keyframes, a task per `files_per_task` files, 1 CPU each, any node) ─┐
    cached files     → map_batches(their keyframes read from the cache, on the driver's node)           ├ union
                     → map_batches(encoder actors: `encoders` of them, 1 GPU each when the cluster has GPUs,
                       else 1 CPU each) → the driver: the single writer of the keyframe cache and the store

The keyframe cache and the store live on the driver's machine only. The cache's index is SQLite in WAL mode, which
works only among processes of one host, so no task writes it: a keyframe task gets no cache path, decodes each file
in its own child process (with its time limit, so a hostile file fails alone) and returns the video's cache entry
and its keyframes as JPEG bytes through Ray's object store; the encoder actors decode those JPEGs in memory (the
bytes the cache will hold, hence the pixels the one-machine path reads back) and pass them on with the features; the
driver writes frames and entry into the cache (`store_keyframes`), then publishes the video. Cached videos' JPEGs are
read by tasks pinned to the driver's node. Workers read the source videos at the driver's paths (a shared or mounted
filesystem): a file a worker cannot read fails with its error code like any unreadable file.

Rows between stages are a JSON text column "video" and a binary column "jpegs" (a video's JPEGs one after another,
their sizes in the JSON), nothing pickled of ours. A task whose worker process dies is run again by Ray (up to 3 times,
Ray's default), an actor that dies is restarted by Ray Data and its batches run again; a video that comes back twice
is stored and published once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import ray
import ray.data
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import vidsearch
from vidsearch.ingest.stages import IngestPlan, Publisher, VideoEncoder, cached_keyframes, decoded_keyframes, \
    encode_keyframes, store_keyframes
from vidsearch.model.source import ModelSource
from vidsearch.video.cache import DATABASE, CacheDatabase

NODE_CHECK_TIMEOUT_S = 120.0


class ClusterMismatch(ValueError):
    """A node of the Ray cluster cannot run this vidsearch (another version, or none)."""


def connect(address: str) -> None:
    """Join the Ray cluster at `address`; "auto": the one this machine belongs to, else a new local instance.
    Nothing to do when this process is connected already. Refuses a cluster with a node that runs another version
    of vidsearch."""
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    check_nodes()


def run_ray(plan: IngestPlan, publisher: Publisher, *, source: ModelSource, precision: str,
            batch_size: int, timeout_s: float, batch_videos: int, encoders: int | None = None,
            files_per_task: int = 4) -> None:
    """Every planned file through keyframes, encode, store and publish on the Ray cluster `connect` joined."""
    if not plan.items:
        return
    gpus = int(ray.cluster_resources().get("GPU", 0))
    videos = _keyframes(plan, timeout_s=timeout_s, files_per_task=files_per_task)
    encoded = videos.map_batches(
        _EncoderActor, batch_size=batch_videos, compute=ray.data.ActorPoolStrategy(size=encoders or max(1, gpus)),
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
        fn_constructor_kwargs={"source": source.absolute().to_dict(), "device": "cuda" if gpus else "cpu",
                               "precision": precision, "batch_size": batch_size,
                               "fingerprint": publisher.fingerprint})
    database = CacheDatabase(plan.cache / DATABASE)
    planned = {item["id"]: item["source"] for item in plan.items}
    for row in encoded.iter_rows():
        video = json.loads(row["video"])
        if planned.get(video["id"]) != video["source"]:  # ids name folders of the cache: only the driver's own
            raise RuntimeError(f"a worker returned a video that was not asked for: {video['id']!r} ({video['source']})")
        if video["id"] in publisher.seen:  # a retried task's or actor's second copy
            continue
        if video["new"]:
            store_keyframes(plan.cache, database, video, _unpack(row["jpegs"], video["sizes"]))
        publisher.add(video)
    publisher.flush()


def _keyframes(plan: IngestPlan, *, timeout_s: float, files_per_task: int) -> ray.data.Dataset:
    """The videos with their JPEGs: files to extract decoded anywhere, cached ones read on the driver's node."""
    extract = [for_workers(item) for item in plan.items if item["task"] is not None]
    cached = [item for item in plan.items if item["task"] is None]
    parts = []
    if extract:  # spread over the nodes' CPUs (`_spread` also keeps Ray from fusing them into the encoder actors)
        parts.append(_files(extract, files_per_task).map_batches(
            _keyframes_task, batch_size=files_per_task, fn_kwargs={"timeout_s": timeout_s}, num_cpus=1,
            ray_remote_args_fn=_spread))
    if cached:  # no CPU asked: reading files, and a head node started with --num-cpus 0 still serves them
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        parts.append(_files(cached, files_per_task).map_batches(
            _cached_task, batch_size=files_per_task, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=2),
            scheduling_strategy=here))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def for_workers(item: dict[str, Any]) -> dict[str, Any]:
    """An item to extract as a keyframe task gets it: without the cache's path (in its task neither), so that no
    worker can write the cache."""
    return {"id": item["id"], "source": item["source"],
            "task": {key: value for key, value in item["task"].items() if key != "cache"}}


def _spread() -> dict[str, Any]:
    """The keyframe tasks' scheduling: Ray Data's default. Given as a function, it keeps Ray Data from fusing the
    tasks into the encoder actors (same CPU request without GPUs), which would decode on `encoders` CPUs only."""
    return {"scheduling_strategy": "SPREAD"}


def _files(items: list[dict[str, Any]], files_per_task: int) -> ray.data.Dataset:
    return ray.data.from_items([{"item": json.dumps(item)} for item in items],
                               override_num_blocks=-(-len(items) // files_per_task))


def _keyframes_task(batch: dict[str, np.ndarray], *, timeout_s: float) -> dict[str, np.ndarray]:
    return _columns(decoded_keyframes([json.loads(item) for item in batch["item"]], timeout_s=timeout_s))


def _cached_task(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _columns(cached_keyframes([json.loads(item) for item in batch["item"]]))


class _EncoderActor:
    """One model per actor, loaded once; refuses to start with weights other than the driver's."""

    def __init__(self, *, source: dict[str, Any], device: str, precision: str, batch_size: int, fingerprint: str):
        self.encoder = VideoEncoder(ModelSource.from_dict(source), device=device, precision=precision,
                                    batch_size=batch_size)
        if self.encoder.fingerprint != fingerprint:
            raise RuntimeError(f"the model loaded on this worker is not the driver's (fingerprint "
                               f"{self.encoder.fingerprint[:12]} ≠ {fingerprint[:12]}): give every node the same files")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        videos = [json.loads(video) for video in batch["video"]]
        jpegs = [_unpack(packed, video["sizes"]) for packed, video in zip(batch["jpegs"], videos, strict=True)]
        encoded = encode_keyframes(self.encoder, videos, jpegs)
        # Only new keyframes go on to the driver, which stores them; cached ones are in its cache already.
        return _columns((video, video_jpegs if video["new"] else []) for video, video_jpegs in zip(encoded, jpegs))


def _columns(videos: Iterator[tuple[dict[str, Any], list[bytes]]]) -> dict[str, np.ndarray]:
    """The batch of (video, JPEGs) pairs: the video as JSON text (with its JPEGs' sizes), the JPEGs as one bytes."""
    texts, packed = [], []
    for video, jpegs in videos:
        texts.append(json.dumps({**video, "sizes": [len(jpeg) for jpeg in jpegs]}))
        packed.append(b"".join(jpegs))
    return {"video": np.array(texts, dtype=object), "jpegs": np.array(packed, dtype=object)}


def _unpack(packed: bytes, sizes: list[int]) -> list[bytes]:
    if sum(sizes) != len(packed) or any(size <= 0 for size in sizes):
        raise ValueError(f"{len(packed)} bytes of JPEGs do not split into {sizes}")
    offsets = np.cumsum([0, *sizes]).tolist()
    return [packed[start:end] for start, end in zip(offsets, offsets[1:])]


# --- one vidsearch on every node ---------------------------------------------------------------------------------


def installation() -> dict[str, str]:
    """What every node of one ingest must share: the vidsearch version, a hash of its Python sources (two editable
    installs of one version can differ) and the FFmpeg PyAV decodes with (another one may give other keyframe
    pixels)."""
    return {"version": vidsearch.__version__, **_sources_and_ffmpeg()}


@functools.cache
def _sources_and_ffmpeg() -> dict[str, str]:
    package = Path(vidsearch.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    codec = av.library_versions.get("libavcodec", ())
    return {"sources": digest.hexdigest()[:16], "ffmpeg": "libavcodec " + ".".join(map(str, codec))}


@ray.remote(num_cpus=0)
def _node_installation() -> dict[str, str]:
    return installation()


def check_nodes(timeout_s: float = NODE_CHECK_TIMEOUT_S) -> None:
    """Every live node of the cluster runs the driver's version of vidsearch (a task pinned to each asks it), so the
    stages' rows mean the same everywhere; ClusterMismatch names a node that runs another or cannot import it.
    (The model is checked by each encoder actor: its fingerprint must be the driver's.)"""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    asked = [(node, _node_installation.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()) for node in nodes]
    here = installation()
    for node, answer in asked:
        name = f"node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
        try:
            there = ray.get(answer, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise ClusterMismatch(f"{name} did not say which vidsearch it runs within {timeout_s:g} s") from None
        except ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise ClusterMismatch(f"{name} cannot run vidsearch: {reason}") from None
        if there["version"] != here["version"]:
            raise ClusterMismatch(f"{name} runs vidsearch {there['version']}, this machine {here['version']}: install "
                                  f"the same version on every node")
        if there["sources"] != here["sources"]:
            raise ClusterMismatch(f"{name} runs other vidsearch {here['version']} sources ({there['sources']}, this "
                                  f"machine {here['sources']}): install the same vidsearch on every node")
        if there["ffmpeg"] != here["ffmpeg"]:
            raise ClusterMismatch(f"{name} decodes with {there['ffmpeg']}, this machine with {here['ffmpeg']}: "
                                  f"keyframes could differ; install the same PyAV on every node")
