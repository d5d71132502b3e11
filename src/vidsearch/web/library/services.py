"""Writes: the caption database from a manifest, and uploads (stored, checked, then ingested in the background).

An upload is saved under a generated name (never the client's) and recorded as an `UploadJob`; the request ends
there. The background thread then checks it by decoding it in a child process (with limits on the work a file may
ask for), extracts its keyframes into the store's keyframe cache, encodes them with the store's model, adds the rows
to the store, adds its captions to the caption database and makes the process's Searcher follow the new store
version. A user has at most VIDSEARCH_UPLOADS_PER_USER uploads unfinished. After a stop, `recover_uploads` resumes or
fails every unfinished job and deletes files no job owns.
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
from vidsearch.web.library.engine import Library, get_library
from vidsearch.web.library.models import Category, UploadJob, VideoClip, display_title
from vidsearch.web.library.videocheck import check_video

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "upload-"
PARTIAL_SUFFIX = ".partial"
INGEST_TIMEOUT_S = 3600.0  # one step of one upload (keyframes, or encoding), in its own process
INGEST_NICE = 10  # those processes yield the CPU to the server's request threads
MAX_ATTEMPTS = 3  # an upload interrupted this many times (e.g. it keeps killing the server) fails
INTERRUPTED = "interrupted: the server stopped before this upload was indexed; upload it again"
FINISHED = (UploadJob.Status.DONE, UploadJob.Status.FAILED)


class UploadRejected(Exception):
    """The uploaded file is not a video vidsearch can use; the message says why."""


class TooManyUploads(Exception):
    """The user has as many unfinished uploads as one may have; the message says so."""


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
    """Category.video_count from the clips (the thesis keeps the count in the table)."""
    counts = dict(VideoClip.objects.values_list("category").annotate(n=Count("video_id")))
    categories = list(Category.objects.all())
    for category in categories:
        category.video_count = counts.get(category.id, 0)
    Category.objects.bulk_update(categories, ["video_count"])


# --- uploads -------------------------------------------------------------------------------------------------------


def create_upload(*, owner_id: int, upload: UploadedFile, category: str = "", sentences: str = "") -> UploadJob:
    """Store an uploaded file under a generated name and queue its job; nothing is decoded on the request's thread
    (the check is the job's first step). TooManyUploads when the owner has VIDSEARCH_UPLOADS_PER_USER unfinished."""
    _refuse_over_quota(owner_id)
    directory = uploads_dir()
    name = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"  # no suffix until the check names the container
    partial = directory / f".{name}{PARTIAL_SUFFIX}"
    _save_upload(upload, partial)
    os.replace(partial, directory / name)
    fsync_dir(directory)
    try:
        with transaction.atomic():  # IMMEDIATE: two requests of one owner cannot both pass the quota
            _refuse_over_quota(owner_id)
            job = UploadJob.objects.create(owner_id=owner_id, file_name=name, size=upload.size,
                                           title=display_title(upload.name or ""), category=category.strip(),
                                           sentences=sentences.strip())
    except TooManyUploads:
        (directory / name).unlink(missing_ok=True)
        raise
    transaction.on_commit(lambda: jobs.submit(run_upload_job, job_id=job.id))
    log.info("upload %s stored as %s (%d bytes), queued", job.id, name, upload.size)
    return job


def _refuse_over_quota(owner_id: int) -> None:
    unfinished = UploadJob.objects.filter(owner_id=owner_id).exclude(status__in=FINISHED).count()
    if unfinished >= settings.VIDSEARCH_UPLOADS_PER_USER:
        raise TooManyUploads(f"You have {unfinished} uploads in progress: wait until one is finished.")


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


def run_upload_job(*, job_id: str) -> None:
    """The background steps of one upload, from where it stands (each step can be run again after an interruption):
    check, keyframes, rows, captions. Any failure ends the job with its reason and removes its file and its
    keyframes."""
    job = UploadJob.objects.get(id=job_id)
    job.attempts += 1
    job.save(update_fields=["attempts", "updated"])
    try:
        if job.status in (UploadJob.Status.QUEUED, UploadJob.Status.CHECKING):
            _check(job)
        video_id = _ingest(job)
    except Exception as error:  # whatever went wrong is the job's outcome, shown on its status page
        log.warning("upload %s failed: %s", job.id, error)
        _fail(job, str(error) or type(error).__name__)
        return
    _set_status(job, UploadJob.Status.DONE, video_id=video_id)


def _check(job: UploadJob) -> None:
    """Decode-check the stored file in a child process, then give it its container's suffix."""
    _set_status(job, UploadJob.Status.CHECKING)
    path = _stored_file(job)
    if path is None:
        raise UploadRejected("the stored file is missing")
    final = path.with_name(_stem(path.name) + _check_upload(path))
    os.replace(path, final)
    fsync_dir(final.parent)
    job.file_name = final.name
    job.save(update_fields=["file_name", "updated"])


def _check_upload(path: Path) -> str:
    """The file's suffix by its container, after decoding its first frame in a child process with a time limit."""
    task = {"path": str(path), "max_seconds": 4 * 3600.0, "max_packets": settings.VIDSEARCH_UPLOAD_MAX_PACKETS,
            "max_packets_per_second": settings.VIDSEARCH_UPLOAD_MAX_PACKETS_PER_SECOND}
    outcome = _worker_for(check_video, settings.VIDSEARCH_UPLOAD_CHECK_SECONDS).run(task)
    if outcome.failure:
        raise UploadRejected(f"not a usable video: {_reason(outcome.detail)}")
    return outcome.result["suffix"]


def _reason(detail: str) -> str:
    """A child's error without its exception class name ("VideoError: corrupt: ..." → "corrupt: ...")."""
    return detail.split(": ", 1)[1] if detail.startswith("VideoError: ") else detail


def _stem(name: str) -> str:
    """`upload-<hex>` of a stored file's name, with or without its suffix."""
    return name.split(".", 1)[0]


def _stored_file(job: UploadJob) -> Path | None:
    """The job's file: by its recorded name, or by its stem when an interruption fell between the check's rename and
    the record of the new name (the record is then corrected)."""
    directory = uploads_dir()
    if (directory / job.file_name).is_file():
        return directory / job.file_name
    stem = _stem(job.file_name)
    found = [path for path in directory.glob(f"{stem}.*") if _stem(path.name) == stem and path.is_file()]
    if len(found) != 1:
        return None
    job.file_name = found[0].name
    job.save(update_fields=["file_name", "updated"])
    return found[0]


def _ingest(job: UploadJob) -> str:
    """Keyframes, then features, each in a fresh child process (the server's threads keep answering searches)."""
    from vidsearch.store.indexer import index_into  # torch: loaded by the server anyway, kept out of manage commands

    library = get_library()
    path = _stored_file(job)
    if path is None:
        raise RuntimeError("the stored file is missing")
    _set_status(job, UploadJob.Status.KEYFRAMES)
    with library.ingesting() as before:
        extracted = _in_child(extract_into, {"video": str(path), "cache": str(library.cache_dir)})
        if "error" not in extracted:
            library.cache_added(extracted["entry"], before=before)
    if "error" in extracted:
        raise RuntimeError(f"keyframes: {extracted['error']['code']}: {extracted['error']['message']}")
    video_id = extracted["video_id"]
    _set_status(job, UploadJob.Status.INDEXING, video_id=video_id)
    record = _record_of(job, path)
    _in_child(index_into, {"store": str(library.store.path), "records": [record.to_json()], **_served_model(library)})
    load_captions(records=[record])
    VideoClip.objects.filter(video_id=video_id).update(title=job.title)
    library.refresh()
    return video_id


def _served_model(library: Library) -> dict[str, str]:
    """The exported model directory the server searches with (`serve --model DIR`), so uploads are encoded by the
    same model (no torch needed) rather than the store's own; nothing when it runs the store's own PyTorch model."""
    from vidsearch.runtime.exported import ExportedModel

    model = library.model
    return {"model": str(model.directory)} if isinstance(model, ExportedModel) else {}


def _record_of(job: UploadJob, path: Path) -> VideoRecord:
    captions = [line for line in job.sentences.splitlines() if line.strip()]
    return VideoRecord(video_id=job.video_id, source=str(path), captions=captions, split="test",
                       category=job.category or None)


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


def _fail(job: UploadJob, reason: str) -> None:
    """End the job with `reason`, removing its file and, unless its video made it into the store, whatever the
    keyframe cache holds of it (frames of a video nobody can search are only disk used)."""
    path = _stored_file(job)
    if path is not None:
        _forget_keyframes(job, path)
        path.unlink()
    _set_status(job, UploadJob.Status.FAILED, error=reason)


def _forget_keyframes(job: UploadJob, path: Path) -> None:
    from vidsearch.video.cache import remove_video

    library = get_library()
    if job.video_id and job.video_id in library.store.videos():
        return
    try:
        remove_video(library.cache_dir, source=path)
    except (OSError, ValueError) as error:  # the job fails all the same; the frames are only disk used
        log.warning("upload %s: cannot remove its keyframes: %s", job.id, error)


# --- after a stop --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    resumed: int  # queued again, from the step they had reached
    completed: int  # their rows were in the store: captions loaded, done
    failed: int  # no file left, or interrupted MAX_ATTEMPTS times
    orphans_removed: int  # files in the uploads directory no job owns, and partial uploads


def recover_uploads() -> Recovery:
    """Bring every job a stopped server left unfinished to a consistent state, then delete files no job owns.

    Run once when the server starts, before it answers requests. A job whose video is already in the store gets its
    captions and is done; one whose file is still there is queued again (every step can run twice: extraction skips
    a video the cache has, indexing adds only videos the store lacks, captions are upserted); one without its file,
    or interrupted MAX_ATTEMPTS times, fails and its file is removed.
    """
    library = get_library()
    library.refresh()  # the latest published version: a job may have added rows the held one lacks
    in_store = library.store.videos()
    resumed = completed = failed = 0
    for job in UploadJob.objects.exclude(status__in=FINISHED).order_by("created"):
        path = _stored_file(job)
        if job.video_id and job.video_id in in_store and path is not None:
            load_captions(records=[_record_of(job, path)])
            _set_status(job, UploadJob.Status.DONE)
            completed += 1
        elif path is None or job.attempts >= MAX_ATTEMPTS:
            _fail(job, INTERRUPTED)
            failed += 1
        else:
            jobs.submit(run_upload_job, job_id=job.id)
            resumed += 1
    return Recovery(resumed, completed, failed, _remove_orphans())


def _remove_orphans() -> int:
    """Delete uploads (and partial uploads) in the uploads directory that no job which may still need them owns."""
    directory = uploads_dir()
    owned = set(UploadJob.objects.exclude(status=UploadJob.Status.FAILED).values_list("file_name", flat=True))
    removed = 0
    for path in directory.iterdir():
        name = path.name
        ours = name.startswith(UPLOAD_PREFIX) or (name.startswith(f".{UPLOAD_PREFIX}") and
                                                  name.endswith(PARTIAL_SUFFIX))
        if ours and name not in owned and not path.is_symlink() and path.is_file():
            path.unlink()
            log.info("removed %s: no upload job owns it", path)
            removed += 1
    return removed
