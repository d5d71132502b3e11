"""`vidsearch index` and `vidsearch search` end to end: synthetic videos → keyframe cache → tiny model → store."""

import json

import numpy as np
import pytest
import torch

from vidsearch.cli import main as cli
from vidsearch.config import FrameConfig
from vidsearch.data.manifest import load_manifest
from vidsearch.data.synthetic import generate_library
from vidsearch.model.source import ModelSource
from vidsearch.store.indexer import encode_rows, index_cache, open_searcher, rows_of
from vidsearch.store.store import FingerprintMismatch, Store
from vidsearch.video.cache import build_cache, open_cache

TINY = ModelSource(backbone="vidsearch-tiny", num_frames=4)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    manifest = generate_library(root / "lib", videos=6, seed=3, size=64, seconds=4.0, fps=4.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=4, size=64), workers=1)
    build_cache([root / "lib" / "videos"], root / "moments", FrameConfig(frames=4, size=64, segment_seconds=2.0),
                workers=1)
    return root, manifest


@pytest.fixture(scope="module")
def tiny_model():
    return TINY.load()


def test_index_stores_exactly_the_model_features_with_metadata(library, tiny_model, tmp_path):
    root, manifest = library
    records = load_manifest(manifest)
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store",
                         records=records, batch_size=4)
    assert (report.videos_added, report.rows_added, report.version) == (6, 6, 1)
    store = Store.open(tmp_path / "store")
    cache = open_cache(root / "cache")
    entry = cache.entries[store.rows.video_id[0]]
    expected = encode_rows(tiny_model, cache, rows_of(entry))
    frames = torch.from_numpy(cache.read_frames(entry.id, [0, 1, 2, 3]))
    with torch.no_grad():
        direct = tiny_model.encode_video(tiny_model.preprocess_frames(frames[None])).numpy()
    np.testing.assert_allclose(store.array("video_feature")[0], direct[0], atol=1e-6)
    np.testing.assert_allclose(expected, direct, atol=1e-6)
    by_id = {r.video_id: r for r in records}
    info = store.videos()[entry.id]
    assert info.category == by_id[entry.id].category and list(info.captions) == list(by_id[entry.id].captions)
    assert store.info["frames"] == str((root / "cache").resolve())
    assert (root / "cache" / store.rows.thumbnail[0]).is_file()


def test_index_resumes_and_refuses_another_model(library, tiny_model, tmp_path):
    root, _ = library
    index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    again = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    assert (again.videos_added, again.videos_skipped, again.version) == (0, 6, None)
    other = ModelSource(backbone="vidsearch-tiny", num_frames=3)
    with pytest.raises(FingerprintMismatch):
        index_cache(model=other.load(), source=other, cache_dir=root / "cache", store_dir=tmp_path / "store")


def test_moments_become_rows_and_search_returns_them(library, tiny_model, tmp_path):
    root, manifest = library
    cache = open_cache(root / "moments")
    moments = sum(len(entry.moments) for entry in cache.ok())
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "moments", store_dir=tmp_path / "store",
                         records=load_manifest(manifest))
    assert report.rows_added == moments > 6
    hit = open_searcher(tmp_path / "store").search("a red circle moves to the left").hits[0]
    assert hit.moments[0].start is not None and hit.moments[0].end > hit.moments[0].start
    assert hit.matched_moments >= 1


def test_cli_index_then_search_json(library, tmp_path, capsys):
    root, manifest = library
    store = str(tmp_path / "store")
    assert cli(["index", "--model", "vidsearch-tiny", "--random-weights", "--frames", str(root / "cache"),
                "--store", store, "--data", str(manifest)]) == 0
    capsys.readouterr()
    assert cli(["search", "a red circle moves to the left", "--store", store, "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 3 and result["index"] == "exact"
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_index_without_a_model_explains_where_to_get_one(library, tmp_path, capsys):
    root, _ = library
    assert cli(["index", "--frames", str(root / "cache"), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "--pretrained openai" in err and "Hugging Face" in err


@pytest.mark.parametrize("threads", [1, None])
def test_query_encoder_equals_encode_text_and_restores_threads(tiny_model, threads):
    from vidsearch.store.indexer import ModelQueryEncoder

    texts = ["a red circle moves to the left", "x"]
    before = torch.get_num_threads()
    encoder = ModelQueryEncoder(tiny_model, threads=threads)
    assert encoder.tower is not None and encoder.fingerprint == tiny_model.fingerprint
    got = encoder.encode(texts)
    with torch.no_grad():
        expected = tiny_model.encode_texts(texts).numpy()
    assert got.dtype == np.float32 and torch.get_num_threads() == before
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
