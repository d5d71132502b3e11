"""`serve --model DIR`: uploads are encoded by the exported model the server runs, not the store's own model."""

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from vidsearch.model.export import export_model
from vidsearch.model.source import ModelSource
from vidsearch.store import indexer
from vidsearch.store.store import Store
from vidsearch.web.library import engine, services
from vidsearch.web.library.models import UploadJob

STORE_MODEL = ModelSource(backbone="vidsearch-tiny", num_frames=4)  # the web library's own (PyTorch) model


@pytest.fixture(scope="module")
def served_export(make_web_library, tmp_path_factory):
    """A library of two videos indexed with PyTorch, and the fp32 export of its model (the same fingerprint)."""
    root = tmp_path_factory.mktemp("served-export")
    own = make_web_library(root, videos=2)
    return own, export_model(STORE_MODEL.load(), root / "exported")


@pytest.mark.slow
def test_an_upload_is_encoded_with_the_exported_model_the_server_runs(served_export, db, settings, tmp_path,
                                                                       monkeypatch):
    own, exported = served_export
    settings.VIDSEARCH_UPLOADS = tmp_path / "uploads"
    loaded, load = [], indexer._loaded
    monkeypatch.setattr(indexer, "_loaded", lambda source: loaded.append(source) or load(source))
    monkeypatch.setattr(services, "_in_child", lambda fn, task: fn(task))  # the ingest steps in this process
    engine.install(engine.Library.open(own.store, refresh_seconds=60.0, model=exported))
    try:
        user = User.objects.create_user("uploader", password="a long password")
        video = sorted((own.root / "lib" / "videos").glob("*.mp4"))[0]
        job = services.create_upload(owner_id=user.id, sentences="a kite over the beach",
                                     upload=SimpleUploadedFile("kite.mp4", video.read_bytes()))
        services.run_upload_job(job_id=job.id)
    finally:
        engine.install(None)
    job = UploadJob.objects.get(id=job.id)
    assert job.status == "done", job.error
    assert loaded == [ModelSource(exported=str(exported))]
    store = Store.open(own.store)
    assert job.video_id in store.videos()
    assert store.info["model"] == STORE_MODEL.absolute().to_dict()  # the store still records its own model
