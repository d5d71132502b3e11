"""`vidsearch index` under torchrun: 2 gloo ranks share the rows and publish one store version, or none at all."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import generate_library
from vidsearch.model.source import ModelSource
from vidsearch.store import indexer
from vidsearch.store.indexer import index_cache, index_cache_sharded
from vidsearch.store.store import Store
from vidsearch.video.cache import build_cache

WORKER = Path(__file__).with_name("sharded_index_worker.py")
SOURCE = ModelSource(backbone="vidsearch-tiny", num_frames=4)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """4 videos of 4 s cut into 2 s moments: 8 rows, more than one per video, an uneven number per rank in a chunk."""
    root = tmp_path_factory.mktemp("sharded")
    manifest = generate_library(root / "lib", videos=4, seed=1, size=64, seconds=4.0, fps=4.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=4, size=64, segment_seconds=2.0),
                workers=1)
    return root, manifest


def _index_args(cache, store, manifest) -> list[str]:
    return ["-m", "vidsearch", "index", "--model", "vidsearch-tiny", "--random-weights", "--frames", str(cache),
            "--store", str(store), "--data", str(manifest), "--device", "cpu", "--batch-size", "3"]


def _rows(store: Store) -> list[tuple]:
    rows = store.rows
    return list(zip(rows.video_id, rows.start, rows.end, rows.thumbnail))


def test_two_ranks_publish_one_version_equal_to_one_process(library, torchrun, tmp_path):
    root, manifest = library
    alone = subprocess.run([sys.executable, *_index_args(root / "cache", tmp_path / "alone", manifest)],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    ranks = torchrun(2, *_index_args(root / "cache", tmp_path / "ranks", manifest))
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert ranks.stdout.count("indexed 4 videos (8 rows)") == 1  # rank 0 alone reports
    one, two = Store.open(tmp_path / "alone"), Store.open(tmp_path / "ranks")
    assert two.version == one.version == 1 and len(two) == len(one) == 8
    assert _rows(two) == _rows(one) and two.videos() == one.videos()
    assert two.fingerprint == one.fingerprint and two.info == one.info
    # Rows are batched differently (3 at a time alone, 4 rows a rank split 3 + 1): measured bit-identical on this
    # CPU, checked to 1e-6 since a BLAS may round a matrix product differently for another number of rows.
    np.testing.assert_allclose(two.array("video_feature"), one.array("video_feature"), rtol=0, atol=1e-6)
    assert (tmp_path / "ranks" / "site.sqlite3").is_file()  # the caption database, filled once by rank 0


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_rank_that_dies_leaves_the_previous_version(library, torchrun, tmp_path, how):
    root, _ = library
    previous = index_cache(model=SOURCE.load(), source=SOURCE, cache_dir=root / "cache", store_dir=tmp_path / "store")
    before = Store.open(tmp_path / "store")
    failed = torchrun(2, str(WORKER), str(root / "cache"), str(tmp_path / "store"), how)
    assert failed.returncode != 0
    assert ("rank 1 fails mid-way" if how == "raise" else "exitcode  : 3") in failed.stderr, failed.stderr[-3000:]
    after = Store.open(tmp_path / "store", verify="full")
    assert after.version == previous.version == 1
    assert _rows(after) == _rows(before)
    np.testing.assert_array_equal(after.array("video_feature"), before.array("video_feature"))


def test_alone_it_publishes_one_version_with_the_features_of_index_cache(library, tmp_path):
    root, _ = library
    model = SOURCE.load()
    chunked = index_cache(model=model, source=SOURCE, cache_dir=root / "cache", store_dir=tmp_path / "chunked")
    report = index_cache_sharded(model=model, source=SOURCE, cache_dir=root / "cache", store_dir=tmp_path / "one",
                                 batch_size=3)
    assert (report.version, report.videos_added, report.rows_added) == (1, 4, 8) == (chunked.version, 4, 8)
    one, expected = Store.open(tmp_path / "one"), Store.open(tmp_path / "chunked")
    assert _rows(one) == _rows(expected)
    np.testing.assert_allclose(one.array("video_feature"), expected.array("video_feature"), rtol=0, atol=1e-6)


def test_videos_another_writer_added_meanwhile_are_not_added_again(library, tmp_path, monkeypatch):
    """The sharded index has planned all 4 videos; while it encodes them, `index_cache` adds them all."""
    root, _ = library
    model, encode = SOURCE.load(), indexer._encode_across_ranks

    def another_writer_first(*args, **kwargs):
        index_cache(model=model, source=SOURCE, cache_dir=root / "cache", store_dir=tmp_path / "store")
        return encode(*args, **kwargs)

    monkeypatch.setattr(indexer, "_encode_across_ranks", another_writer_first)
    report = index_cache_sharded(model=model, source=SOURCE, cache_dir=root / "cache", store_dir=tmp_path / "store")
    assert (report.version, report.videos_added, report.rows_added, report.videos_skipped) == (None, 0, 0, 4)
    store = Store.open(tmp_path / "store")
    assert (store.version, len(store)) == (1, 8) and sorted(set(store.rows.video_id)) == sorted(store.videos())
