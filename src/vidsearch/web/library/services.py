"""Writes: the caption database from a manifest, and uploads (stored, checked, then ingested in the background).

An upload is saved under a generated name (never the client's), checked by decoding it in a child process, and
recorded as an `UploadJob`; the background thread then extracts its keyframes into the store's keyframe cache,
encodes them with the store's model, adds the rows to the store, adds its captions to the caption database and
makes the process's Searcher follow the new store version.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Count

from vidsearch.data.manifest import VideoRecord
from vidsearch.fsutil import fsync_dir
from vidsearch.video.cache import extract_into
from vidsearch.video.workers import IsolatedWorker
from vidsearch.web.library import jobs
from vidsearch.web.library.engine import get_library
from vidsearch.web.library.models import Category, UploadJob, VideoClip
from vidsearch.web.library.videocheck import check_video

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "upload-"
INGEST_TIMEOUT_S = 3600.0  # one step of one upload (keyframes, or encoding), in its own process
INGEST_NICE = 10  # those processes yield the CPU to the server's request threads
INTERRUPTED = "interrupted: the server stopped before this upload was indexed; upload it again"


class UploadRejected(Exception):
    """The uploaded file is not a video vidsearch can use; the message says why."""


@dataclass(frozen=True)
class CaptionLoadReport:
    videos: int
    categories: int


# --- the caption database ------------------------------------------------------------------------------------------


@transaction.atomic
def load_captions(*, records: Iterable[VideoRecord]) -> CaptionLoadReport:
    """Insert or update one VideoClip per video id of the records (moments of a video merged), then recount."""
    merged = _merge_by_video(records)
    names = {category for category, _ in merged.values() if category}
    known = set(Category.objects.filter(name__in=names).values_list("name", flat=True))
    Category.objects.bulk_create([Category(name=name) for name in sorted(names - known)])
    by_name = {category.name: category for category in Category.objects.filter(name__in=names)}
    clips = [VideoClip(video_id=video_id, category=by_name.get(category), sentences="\n".join(captions))
             for video_id, (category, captions) in merged.items()]
    VideoClip.objects.bulk_create(clips, update_conflicts=True, unique_fields=["video_id"],
                                  update_fields=["category", "sentences"])
    recount_categories()
    return CaptionLoadReport(len(clips), len(names))


def _merge_by_video(records: Iterable[VideoRecord]) -> dict[str, tuple[str | None, list[str]]]:
    merged: dict[str, tuple[str | None, list[str]]] = {}
    for record in records:
        category, captions = merged.get(record.video_id, (None, []))
        lines = [" ".join(caption.split()) for caption in record.captions]
        captions += [line for line in lines if line and line not in captions]
        merged[record.video_id] = (category or record.category, captions)
    return merged


def recount_categories() -> None:
    """Category.video_count from the clips (the seed keeps the count in the table)."""
    counts = dict(VideoClip.objects.values_list("category").annotate(n=Count("video_id")))
    categories = list(Category.objects.all())
    for category in categories:
        category.video_count = counts.get(category.id, 0)
    Category.objects.bulk_update(categories, ["video_count"])


# --- uploads -------------------------------------------------------------------------------------------------------


def create_upload(*, owner_id: int, upload: UploadedFile, category: str = "", sentences: str = "") -> UploadJob:
    """Store and check an uploaded video, record its job and queue its ingestion; UploadRejected if unusable."""
    directory = uploads_dir()
    name = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
    partial = directory / f".{name}.partial"
    _save_upload(upload, partial)
    try:
        suffix = _check_upload(partial)
    except UploadRejected:
        partial.unlink(missing_ok=True)
        raise
    final = directory / f"{name}{suffix}"
    os.replace(partial, final)
    fsync_dir(directory)
    job = UploadJob.objects.create(owner_id=owner_id, file_name=final.name, size=upload.size,
                                   category=category.strip(), sentences=sentences.strip())
    transaction.on_commit(lambda: jobs.submit(run_upload_job, job_id=job.id))
    log.info("upload %s stored as %s (%d bytes)", job.id, final.name, upload.size)
    return job


def uploads_dir() -> Path:
    directory = Path(settings.VIDSEARCH_UPLOADS)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def _save_upload(upload: UploadedFile, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _check_upload(path: Path) -> str:
    """The file's suffix by its container, after decoding its first frame in a child process with a time limit."""
    task = {"path": str(path), "max_seconds": 4 * 3600.0}
    timeout = settings.VIDSEARCH_UPLOAD_CHECK_SECONDS
    outcome = _worker_for(check_video, timeout).run(task)
    if outcome.failure:
        raise UploadRejected(f"not a usable video: {_reason(outcome.detail)}")
    return outcome.result["suffix"]


def _reason(detail: str) -> str:
    """A child's error without its exception class name ("VideoError: corrupt: ..." → "corrupt: ...")."""
    return detail.split(": ", 1)[1] if detail.startswith("VideoError: ") else detail


def run_upload_job(*, job_id: str) -> None:
    """The background steps of one upload; any failure ends the job with its reason."""
    job = UploadJob.objects.get(id=job_id)
    try:
        video_id = _ingest(job)
    except Exception as error:  # whatever went wrong is the job's outcome, shown on its status page
        log.warning("upload %s failed: %s", job.id, error)
        (uploads_dir() / job.file_name).unlink(missing_ok=True)
        _set_status(job, UploadJob.Status.FAILED, error=str(error) or type(error).__name__)
        return
    _set_status(job, UploadJob.Status.DONE, video_id=video_id)


def _ingest(job: UploadJob) -> str:
    """Keyframes, then features, each in a fresh child process (the server's threads keep answering searches)."""
    from vidsearch.store.indexer import index_into  # torch: loaded by the server anyway, kept out of manage commands

    library = get_library()
    path = uploads_dir() / job.file_name
    _set_status(job, UploadJob.Status.KEYFRAMES)
    with library.ingesting() as before:
        extracted = _in_child(extract_into, {"video": str(path), "cache": str(library.cache_dir)})
        if "error" not in extracted:
            library.cache_added(extracted["entry"], before=before)
    if "error" in extracted:
        raise RuntimeError(f"keyframes: {extracted['error']['code']}: {extracted['error']['message']}")
    video_id = extracted["video_id"]
    _set_status(job, UploadJob.Status.INDEXING, video_id=video_id)
    captions = [line for line in job.sentences.splitlines() if line.strip()]
    record = VideoRecord(video_id=video_id, source=str(path), captions=captions, split="test",
                         category=job.category or None)
    _in_child(index_into, {"store": str(library.store.path), "records": [record.to_json()]})
    load_captions(records=[record])
    library.refresh()
    return video_id


_workers: dict[tuple[Callable, float], IsolatedWorker] = {}
_workers_lock = threading.Lock()


def _worker_for(fn: Callable[[dict], dict], timeout_s: float) -> IsolatedWorker:
    """The server's long-lived, niced child process for fn (started on first use): no interpreter start-up per
    upload, and what it loads (PyAV, the model) stays loaded; a task that times out or crashes costs only that child."""
    with _workers_lock:
        key = (fn, timeout_s)
        if key not in _workers:
            _workers[key] = IsolatedWorker(fn, timeout_s=timeout_s, nice=INGEST_NICE)
        return _workers[key]


def _in_child(fn: Callable[[dict], dict], task: dict) -> dict:
    outcome = _worker_for(fn, INGEST_TIMEOUT_S).run(task)
    if outcome.failure:
        raise RuntimeError(f"{fn.__name__}: {outcome.failure}: {outcome.detail}")
    return outcome.result


def _set_status(job: UploadJob, status: str, *, error: str = "", video_id: str | None = None) -> None:
    job.status, job.error = status, error
    job.video_id = video_id if video_id is not None else job.video_id
    job.save(update_fields=["status", "error", "video_id", "updated"])


def fail_interrupted_jobs() -> int:
    """Jobs a stopped server left unfinished are marked failed (run once when the server starts)."""
    return UploadJob.objects.exclude(status__in=[UploadJob.Status.DONE, UploadJob.Status.FAILED]).update(
        status=UploadJob.Status.FAILED, error=INTERRUPTED)
