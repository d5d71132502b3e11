"""The Ray Data executor: keyframes as CPU tasks, the model in an actor pool, this process (the driver) publishing.

    ray.data.from_items(files) → map_batches(keyframes, a task per `files_per_task` files, 1 CPU each)
                               → map_batches(encoder actors: `encoders` of them, 1 GPU each when the cluster has
                                 GPUs, else 1 CPU each) → the driver, the single store writer

A task whose worker process dies is run again by Ray (up to 3 times, Ray's default), an actor that dies is restarted
by Ray Data and its batches run again; a video that comes back twice is published once. Each file is still decoded in
its own child process inside the task, so a hostile file fails alone.

One host only, for now: the stages read and write the keyframe cache's SQLite database, which runs in WAL mode, and
SQLite's WAL works only among processes of one host (its index is shared memory), not over a network filesystem.
A cluster of several nodes is refused with one line (see docs/scaling.md for what multi-node ingest needs).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import ray
import ray.data

from vidsearch.ingest.stages import IngestPlan, Publisher, VideoEncoder, encode, keyframes
from vidsearch.model.source import ModelSource


def connect(address: str) -> None:
    """Join the Ray cluster at `address`; "auto": the one this machine belongs to, else a new local instance.
    Nothing to do when this process is connected already. Refuses a cluster of several nodes."""
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    _check_one_host()


def run_ray(plan: IngestPlan, publisher: Publisher, *, source: ModelSource, precision: str,
            batch_size: int, timeout_s: float, batch_videos: int, encoders: int | None = None,
            files_per_task: int = 4) -> None:
    """Every planned file through keyframes, encode and publish on the Ray cluster `connect` joined."""
    if not plan.items:
        return
    gpus = int(ray.cluster_resources().get("GPU", 0))
    tasks = -(-len(plan.items) // files_per_task)
    files = ray.data.from_items([{"item": json.dumps(item)} for item in plan.items], override_num_blocks=tasks)
    videos = files.map_batches(_keyframes_task, batch_size=files_per_task, fn_kwargs={"timeout_s": timeout_s},
                               num_cpus=1)
    encoded = videos.map_batches(
        _EncoderActor, batch_size=batch_videos, compute=ray.data.ActorPoolStrategy(size=encoders or max(1, gpus)),
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
        fn_constructor_kwargs={"source": source.absolute().to_dict(), "device": "cuda" if gpus else "cpu",
                               "precision": precision, "batch_size": batch_size,
                               "fingerprint": publisher.fingerprint})
    for row in encoded.iter_rows():
        publisher.add(json.loads(row["video"]))
    publisher.flush()


class MultiNodeUnsupported(ValueError):
    """The Ray cluster has more than one node (see the module docstring)."""


def _check_one_host() -> None:
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1:
        raise MultiNodeUnsupported(f"the Ray cluster has {len(nodes)} nodes; ingest runs on one node for now (the "
                                   f"keyframe cache's SQLite database cannot be shared between hosts)")


def _keyframes_task(batch: dict[str, np.ndarray], *, timeout_s: float) -> dict[str, np.ndarray]:
    items = [json.loads(item) for item in batch["item"]]
    return _column(keyframes(items, workers=1, timeout_s=timeout_s))


class _EncoderActor:
    """One model per actor, loaded once; refuses to start with weights other than the driver's."""

    def __init__(self, *, source: dict[str, Any], device: str, precision: str, batch_size: int, fingerprint: str):
        self.encoder = VideoEncoder(ModelSource.from_dict(source), device=device, precision=precision,
                                    batch_size=batch_size)
        if self.encoder.fingerprint != fingerprint:
            raise RuntimeError(f"the model loaded on this worker is not the driver's (fingerprint "
                               f"{self.encoder.fingerprint[:12]} ≠ {fingerprint[:12]}): give every node the same files")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _column(encode(self.encoder, [json.loads(video) for video in batch["video"]]))


def _column(videos: Any) -> dict[str, np.ndarray]:
    return {"video": np.array([json.dumps(video) for video in videos], dtype=object)}
