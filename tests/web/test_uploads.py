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


def test_the_request_only_stores_and_queues_then_the_job_refuses_a_file_that_does_not_decode(
        client, uploader, uploads, library, monkeypatch):
    checked, original_check = [], services._check_upload
    monkeypatch.setattr(services, "_check_upload", lambda path: checked.append(path) or original_check(path))
    fake = SimpleUploadedFile("video.mp4", b"not a video at all" * 100, content_type="video/mp4")
    response = client.post(reverse("upload"), {"file": fake})
    job = UploadJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("upload-status", args=[job.id])
    assert (job.status, checked) == ("queued", []), "the request thread decoded the file"
    assert [p.name for p in Path(uploads).iterdir()] == [job.file_name] and "." not in job.file_name
    services.run_upload_job(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("not a usable video: "), job.error
    assert list(Path(uploads).iterdir()) == [] and len(checked) == 1


@pytest.mark.django_db(transaction=True)
def test_an_upload_is_stored_under_a_new_name_ingested_and_searchable(client, uploads, mp4, writable, monkeypatch):
    client.force_login(User.objects.create_user("u", password="a long password"))
    engine.get_library()._read_cache()  # the cache as it is now, whatever earlier tests left
    videos_before = len(Store.open(writable.store).videos())
    manifest_reads, open_cache = [], engine.open_cache
    monkeypatch.setattr(engine, "open_cache", lambda path: manifest_reads.append(path) or open_cache(path))
    file = SimpleUploadedFile("../My Holiday <3 & co.mp4", mp4, content_type="video/mp4")
    response = client.post(reverse("upload"), {"file": file, "category": "holiday",
                                               "sentences": "a kite over the beach\nwaves"})
    job = UploadJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("upload-status", args=[job.id])
    assert job.file_name.startswith("upload-") and "Holiday" not in job.file_name
    assert job.title == "My Holiday <3 & co.mp4"  # shown as the title, never used as a path
    assert [p.name for p in Path(uploads).iterdir()] == [job.file_name]
    job = wait_for(job)
    assert job.status == "done", job.error
    assert len(Store.open(writable.store).videos()) == videos_before + 1 and engine.get_library().store.version > 1
    assert VideoClip.objects.get(video_id=job.video_id).captions == ["a kite over the beach", "waves"]
    hits = client.get("/api/search", {"q": "kite", "mode": "text"}).json()["text_matches"]
    assert [hit["video_id"] for hit in hits] == [job.video_id]
    vector = client.get("/api/search", {"q": "a kite over the beach", "mode": "vector", "k": 100}).json()["hits"]
    assert job.video_id in {hit["video_id"] for hit in vector}, "the new rows are not in vector search"
    assert client.get(reverse("video-file", args=[job.video_id])).status_code == 200
    status = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert "Searchable now" in status and 'http-equiv="refresh"' not in status
    # The user's file name is the video's title on its card and in the player, escaped.
    shown = "My Holiday &lt;3 &amp; co.mp4"
    player = client.get(reverse("player", args=[job.video_id])).content.decode()
    assert f'<h1 title="{job.video_id}">{shown}</h1>' in player
    results = client.get("/", {"q": "a kite over the beach", "k": 100}).content.decode()
    assert f'title="{job.video_id}">{shown}</a>' in results
    assert client.get(f"/api/videos/{job.video_id}").json()["title"] == "My Holiday <3 & co.mp4"
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
    job = UploadJob.objects.create(owner=uploader, file_name=stored.name, size=10, status="keyframes")
    page = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert 'http-equiv="refresh"' in page
    services.run_upload_job(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("keyframes: ") and not stored.exists()
    page = client.get(reverse("upload-status", args=[job.id])).content.decode()
    assert "Failed:" in page and job.error in page


def _cache_state(library):
    from vidsearch.video.cache import FRAMES_DIR, open_cache

    cache = open_cache(library.cache_dir)
    folders = sorted(p.name for p in (library.cache_dir / FRAMES_DIR).iterdir())
    return sorted(cache.entries), folders


@pytest.mark.parametrize("stage", ["keyframes", "indexing"])
def test_a_failed_upload_leaves_nothing_in_the_keyframe_cache(uploader, uploads, mp4, writable, monkeypatch, stage):
    """Keyframes taken, then indexing fails (or the file is not a video at all): the cache holds neither a row nor
    a frame folder of it afterwards, as before the upload."""
    library = engine.get_library()
    before = _cache_state(library)
    stored = services.uploads_dir() / "upload-00ab.mp4"
    stored.write_bytes(mp4 if stage == "indexing" else b"garbage that passed no check")
    job = UploadJob.objects.create(owner=uploader, file_name=stored.name, size=stored.stat().st_size,
                                   status="keyframes")
    taken = []

    def in_process(fn, task):
        if fn.__name__ == "index_into":
            raise RuntimeError("indexing broke")
        result = fn(task)
        taken.append(result)
        return result

    monkeypatch.setattr(services, "_in_child", in_process)
    services.run_upload_job(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and not stored.exists(), (job.status, job.error)
    if stage == "indexing":
        assert job.error == "indexing broke" and "video_id" in taken[0]  # its keyframes had been taken
    assert _cache_state(library) == before


def test_another_users_upload_is_404(client, uploader, db):
    other = User.objects.create_user("other", password="a long password")
    job = UploadJob.objects.create(owner=other, file_name="upload-1.mp4", size=1)
    assert client.get(reverse("upload-status", args=[job.id])).status_code == 404


def test_a_user_has_at_most_the_allowed_unfinished_uploads(client, uploader, uploads, library, settings):
    settings.VIDSEARCH_UPLOADS_PER_USER = 2
    for _ in range(2):
        file = SimpleUploadedFile("v.mp4", b"x" * 100, content_type="video/mp4")
        assert client.post(reverse("upload"), {"file": file}).status_code == 302
    file = SimpleUploadedFile("v.mp4", b"x" * 100, content_type="video/mp4")
    refused = client.post(reverse("upload"), {"file": file})
    assert refused.status_code == 429 and "You have 2 uploads in progress" in refused.content.decode()
    assert UploadJob.objects.count() == 2 and len(list(Path(uploads).iterdir())) == 2
    UploadJob.objects.update(status="failed")
    file = SimpleUploadedFile("v.mp4", b"x" * 100, content_type="video/mp4")
    assert client.post(reverse("upload"), {"file": file}).status_code == 302


def packet_flood(path: Path, packets: int) -> Path:
    """An MKV whose first packet is a real frame and the rest one-byte packets 1 ms apart (1000 per second)."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        first = [*stream.encode(frame), *stream.encode(None)]
        for packet in first:
            out.mux(packet)
        for i in range(packets):
            packet = av.Packet(b"\0")
            packet.stream, packet.time_base = stream, first[-1].time_base
            packet.pts = packet.dts = first[-1].pts + 1 + i
            out.mux(packet)
    return path


def test_a_file_of_many_tiny_packets_is_refused_early(client, uploader, uploads, library, tmp_path, monkeypatch):
    monkeypatch.setattr(services, "_ingest", lambda job: pytest.fail("the file passed the check"))
    flood = packet_flood(tmp_path / "flood.mkv", 50_000)
    file = SimpleUploadedFile("flood.mkv", flood.read_bytes(), content_type="video/x-matroska")
    assert client.post(reverse("upload"), {"file": file}).status_code == 302
    job = UploadJob.objects.get()
    services.run_upload_job(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("not a usable video: packet_rate: "), job.error
    counted = int(job.error.split("packet_rate: ")[1].split()[0])
    assert counted <= 2000, f"read {counted} of 50001 packets before refusing"
    assert list(Path(uploads).iterdir()) == []


# --- after a stop (the state a SIGKILL leaves, at each point of a job) ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_stop_between_the_request_and_the_job_resumes_it(client, uploads, mp4, writable, monkeypatch):
    client.force_login(User.objects.create_user("early", password="a long password"))
    monkeypatch.setattr(services.jobs, "submit", lambda fn, **kw: None)  # the server dies before the job starts
    file = SimpleUploadedFile("a.mp4", mp4, content_type="video/mp4")
    client.post(reverse("upload"), {"file": file, "sentences": "a resumed upload"})
    job = UploadJob.objects.get()
    assert job.status == "queued"
    monkeypatch.undo()
    videos_before = len(Store.open(writable.store).videos())
    assert services.recover_uploads() == services.Recovery(resumed=1, completed=0, failed=0, orphans_removed=0)
    job = wait_for(job)
    assert job.status == "done", job.error
    assert len(Store.open(writable.store).videos()) == videos_before + 1
    assert VideoClip.objects.get(video_id=job.video_id).captions == ["a resumed upload"]
    assert [p.name for p in Path(uploads).iterdir()] == [job.file_name] and job.file_name.endswith(".mp4")


class Killed(BaseException):
    """What the server's death looks like to the job: nothing after it runs."""


@pytest.mark.django_db(transaction=True)
def test_a_stop_after_the_rows_before_the_captions_completes_the_job_without_new_rows(
        client, uploads, mp4, writable, monkeypatch):
    owner = User.objects.create_user("late", password="a long password")
    client.force_login(owner)
    monkeypatch.setattr(services.jobs, "submit", lambda fn, **kw: None)
    file = SimpleUploadedFile("b.mp4", mp4 + b"\0", content_type="video/mp4")  # not the same file as other tests'
    client.post(reverse("upload"), {"file": file, "sentences": "captions after a stop"})
    job = UploadJob.objects.get(owner=owner)

    def killed(**kwargs):
        raise Killed

    monkeypatch.setattr(services, "load_captions", killed)
    with pytest.raises(Killed):
        services.run_upload_job(job_id=job.id)
    monkeypatch.undo()
    job.refresh_from_db()
    rows_before = len(Store.open(writable.store))
    assert job.status == "indexing" and job.video_id in Store.open(writable.store).videos()
    assert not VideoClip.objects.filter(video_id=job.video_id).exists()
    assert services.recover_uploads() == services.Recovery(resumed=0, completed=1, failed=0, orphans_removed=0)
    job.refresh_from_db()
    assert job.status == "done" and len(Store.open(writable.store)) == rows_before
    assert VideoClip.objects.get(video_id=job.video_id).captions == ["captions after a stop"]


def test_jobs_that_cannot_resume_fail_and_orphan_files_are_removed(uploader, uploads, writable):
    directory = services.uploads_dir()
    for name in ["upload-aaaa.mp4", "upload-bbbb", ".upload-cccc.partial", "upload-done.mp4", "upload-dddd.mp4",
                 "notes.txt"]:
        (directory / name).write_bytes(b"x")
    lost = UploadJob.objects.create(owner=uploader, file_name="upload-gone.mp4", size=1, status="keyframes")
    tried = UploadJob.objects.create(owner=uploader, file_name="upload-dddd.mp4", size=1, status="keyframes",
                                     attempts=services.MAX_ATTEMPTS)
    UploadJob.objects.create(owner=uploader, file_name="upload-done.mp4", size=1, status="done")
    assert services.recover_uploads() == services.Recovery(resumed=0, completed=0, failed=2, orphans_removed=3)
    lost.refresh_from_db(), tried.refresh_from_db()
    assert (lost.status, lost.error, tried.status) == ("failed", services.INTERRUPTED, "failed")
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt", "upload-done.mp4"]
