"""The one-machine executor: keyframes in a process per core, the model in this process, this process publishing."""

from __future__ import annotations

from typing import Any

from vidsearch.ingest.stages import IngestPlan, Publisher, VideoEncoder, encode, keyframes


def run_local(plan: IngestPlan, publisher: Publisher, encoder: VideoEncoder, *, workers: int, timeout_s: float,
              batch_videos: int) -> None:
    """Every planned file through keyframes, encode and publish; encodes `batch_videos` videos at a time."""
    ready: list[dict[str, Any]] = []
    for video in keyframes(plan.items, workers=workers, timeout_s=timeout_s):
        ready.append(video)
        if len(ready) >= batch_videos:
            _encode_and_publish(encoder, ready, publisher)
            ready = []
    _encode_and_publish(encoder, ready, publisher)
    publisher.flush()


def _encode_and_publish(encoder: VideoEncoder, videos: list[dict[str, Any]], publisher: Publisher) -> None:
    for video in encode(encoder, videos):
        publisher.add(video)
