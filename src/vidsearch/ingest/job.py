"""One ingest job: plan, then the stages on this machine or on a Ray cluster (see the package docstring)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from vidsearch.config import FrameConfig
from vidsearch.ingest.local import run_local
from vidsearch.ingest.stages import IngestReport, Publisher, VideoEncoder, plan
from vidsearch.model.source import ModelSource
from vidsearch.store.indexer import store_info
from vidsearch.store.store import Store, StoreNotFound
from vidsearch.video.cache import MANIFEST, open_cache
from vidsearch.video.decode import DecodeLimits

log = logging.getLogger(__name__)

CLUSTER_EXTRA = "vidsearch[cluster]"


class RayMissing(RuntimeError):
    """A Ray address was given but Ray is not installed."""


def ingest(inputs: Iterable[str | Path], *, store_dir: str | Path, cache_dir: str | Path, source: ModelSource,
           config: FrameConfig = FrameConfig(), ray_address: str | None = None, batch_videos: int = 64,
           workers: int | None = None, limits: DecodeLimits = DecodeLimits(), device: str = "cpu",
           precision: str = "fp32", batch_size: int = 16, encoders: int | None = None, files_per_task: int = 4,
           on_publish: Callable[[int, IngestReport], None] | None = None) -> IngestReport:
    """Ingest the input videos (files, or directories searched for them) into the store, through the keyframe cache
    `cache_dir`, publishing a store version every `batch_videos` encoded videos. `ray_address` None: on this
    machine (`workers` decoders, the model on `device`); else on that Ray cluster ("auto": see `raydata.connect`).
    `on_publish(version, report)` is called after each published version."""
    if batch_videos < 1 or batch_size < 1 or files_per_task < 1:
        raise ValueError("batch sizes must be at least 1")
    run_ray = _ray_executor(ray_address) if ray_address is not None else None
    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    # With Ray the actors encode; the driver's model gives the fingerprint the store and the actors are checked against.
    encoder = VideoEncoder(source, device="cpu" if run_ray else device, precision=precision, batch_size=batch_size)
    job = plan(inputs, cache_dir=cache_dir, store_dir=store_dir, config=config, fingerprint=encoder.fingerprint,
               limits=limits, workers=os.cpu_count() if run_ray else workers)
    publisher = Publisher(store_dir, job.report, fingerprint=encoder.fingerprint, info=store_info(source, cache_dir),
                          batch_videos=batch_videos, on_publish=on_publish)
    log.info("%d files to ingest, %d already in the store", len(job.items), job.report.videos_in_store)
    if run_ray is None:
        run_local(job, publisher, encoder, workers=workers, timeout_s=limits.timeout_s, batch_videos=batch_videos)
    else:
        run_ray(job, publisher, source=source, precision=precision, batch_size=batch_size,
                timeout_s=limits.timeout_s, batch_videos=batch_videos, encoders=encoders,
                files_per_task=files_per_task)
    job.report.seconds = time.perf_counter() - started
    return job.report


def default_cache(store_dir: str | Path) -> Path:
    """The keyframe cache the store records (its thumbnails live there), else `<store>-frames` beside the store."""
    try:
        recorded = Store.open(store_dir).info.get("frames")
    except StoreNotFound:
        recorded = None
    return Path(recorded) if recorded else Path(f"{Path(store_dir).absolute()}-frames")


def frame_config(cache_dir: str | Path, *, frames: int | None = None, size: int | None = None) -> FrameConfig:
    """The settings of the existing cache unless `frames`/`size` are given, else the defaults with those."""
    base = open_cache(cache_dir).settings if (Path(cache_dir) / MANIFEST).exists() else FrameConfig()
    return replace(base, frames=frames or base.frames, size=size or base.size)


def _ray_executor(address: str) -> Callable[..., None]:
    """`raydata.run_ray`, connected to the cluster at `address`; RayMissing when Ray is not installed."""
    try:
        from vidsearch.ingest.raydata import connect, run_ray
    except ImportError as error:
        if (error.name or "").split(".")[0] != "ray":
            raise
        raise RayMissing(f"--ray needs Ray: pip install '{CLUSTER_EXTRA}'") from None
    connect(address)
    return run_ray
