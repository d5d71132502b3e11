"""Uploads: login, size limit, decoding check, generated names, background ingestion, failures with reasons."""

import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from vidsearch.store.store import Store
from vidsearch.web.library import engine, services
from vidsearch.web.library.models import UploadJob, VideoClip


@pytest.fixture
def uploader(db, client):
    user = User.objects.create_user("uploader", password="a long password")
    client.force_login(user)
    return user


@pytest.fixture
def uploads(settings, tmp_path):
    settings.VIDSEARCH_UPLOADS = tmp_path / "uploads"
    return settings.VIDSEARCH_UPLOADS


@pytest.fixture(scope="module")
def writable_library(make_web_library, tmp_path_factory):
    """A library of two videos of its own: ingestion writes to its cache and store."""
    own = make_web_library(tmp_path_factory.mktemp("writable"), videos=2)
    return own, engine.Library.open(own.store, refresh_seconds=60.0)


@pytest.fixture
def writable(writable_library):
    own, library = writable_library
    engine.install(library)
    yield own
    engine.install(None)


@pytest.fixture
def mp4(web_library) -> bytes:
    return sorted((web_library.root / "lib" / "videos").glob("*.mp4"))[0].read_bytes()


def test_uploading_needs_a_login(client, db):
    response = client.get(reverse("upload"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert client.post(reverse("upload"), {}).status_code == 302


def test_the_form_and_the_list_of_uploads(client, uploader, library):
    page = client.get(reverse("upload"))
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.content.decode()


def test_a_body_over_the_limit_is_413_before_it_is_read(client, uploader, uploads, settings):
    settings.VIDSEARCH_MAX_UPLOAD_BYTES = 1000
    big = SimpleUploadedFile("big.mp4", b"\0" * 100_000, content_type="video/mp4")
    response = client.post(reverse("upload"), {"file": big})
    assert response.status_code == 413 and "too large" in response.content.decode()
    assert client.post(reverse("api-search"), {"x": "y" * 100_000}).status_code == 413
    assert not UploadJob.objects.exists()


def test_a_file_over_the_limit_within_the_form_overhead_is_413(client, uploader, uploads, settings):
    settings.VIDSEARCH_MAX_UPLOAD_BYTES = 1000
    file = SimpleUploadedFile("a.mp4", b"\0" * 2000, content_type="video/mp4")
    assert client.post(reverse("upload"), {"file": file}).status_code == 413


def test_a_file_that_does_not_decode_is_refused_and_removed(client, uploader, uploads, library):
    fake = SimpleUploadedFile("video.mp4", b"not a video at all" * 100, content_type="video/mp4")
    response = client.post(reverse("upload"), {"file": fake})
    assert response.status_code == 400 and "not a usable video" in response.content.decode()
    assert list(Path(uploads).iterdir()) == [] and not UploadJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_is_stored_under_a_new_name_ingested_and_searchable(client, uploads, mp4, writable, monkeypatch):
    client.force_login(User.objects.create_user("u", password="a long password"))
    engine.get_library()._read_cache()  # the cache as it is now, whatever earlier tests left
    manifest_reads, open_cache = [], engine.open_cache
    monkeypatch.setattr(engine, "open_cache", lambda path: manifest_reads.append(path) or open_cache(path))
    file = SimpleUploadedFile("../My Holiday.mp4", mp4, content_type="video/mp4")
    response = client.post(reverse("upload"), {"file": file, "category": "holiday",
                                               "sentences": "a kite over the beach\nwaves"})
    job = UploadJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("upload-status", args=[job.id])
    assert job.file_name.startswith("upload-") and "Holiday" not in job.file_name
    assert [p.name for p in Path(uploads).iterdir()] == [job.file_name]
    job = wait_for(job)
    assert job.status == "done", job.error
    assert len(Store.open(writable.store).videos()) == 3 and engine.get_library().store.version > 1
    assert VideoClip.objects.get(video_id=job.video_id).captions == ["a kite over the beach", "waves"]
    hits = client.get("/api/search", {"q": "kite", "mode": "text"}).json()["text_matches"]
    assert [hit["video_id"] for hit in hits] == [job.video_id]
    assert client.get(reverse("video-file", args=[job.video_id])).status_code == 200
    status = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert "Searchable now" in status and 'http-equiv="refresh"' not in status
    # The server added the new video's keyframe entry to the cache it holds; it never parsed the manifest again.
    assert job.video_id in engine.get_library().cache().entries and manifest_reads == []


def wait_for(job: UploadJob, timeout: float = 90.0) -> UploadJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"upload still {job.status} after {timeout} s")


def test_a_failed_ingestion_shows_its_reason_and_drops_the_file(client, uploader, uploads, writable):
    stored = services.uploads_dir() / "upload-0000.mp4"
    stored.write_bytes(b"garbage that passed no check")
    job = UploadJob.objects.create(owner=uploader, file_name=stored.name, size=10)
    page = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert 'http-equiv="refresh"' in page
    services.run_upload_job(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("keyframes: ") and not stored.exists()
    page = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert "Failed:" in page and job.error in page


def test_another_users_upload_is_404(client, uploader, db):
    other = User.objects.create_user("other", password="a long password")
    job = UploadJob.objects.create(owner=other, file_name="upload-1.mp4", size=1)
    assert client.get(reverse("upload-status", args=[job.id])).status_code == 404


def test_jobs_interrupted_by_a_stop_are_marked_failed(uploader):
    queued = UploadJob.objects.create(owner=uploader, file_name="upload-1.mp4", size=1)
    done = UploadJob.objects.create(owner=uploader, file_name="upload-2.mp4", size=1, status="done")
    assert services.fail_interrupted_jobs() == 1
    queued.refresh_from_db(), done.refresh_from_db()
    assert (queued.status, done.status) == ("failed", "done") and queued.error == services.INTERRUPTED
