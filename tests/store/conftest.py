"""Shared builders for the store tests: unit vectors and row metadata that are a pure function of the row's id."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from vidsearch.store.store import RowMeta

DIM = 16


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def clustered(count: int, dim: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Random unit vectors around random centres, as features of videos of a few kinds are."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def vector_of(key: str, dim: int = DIM) -> np.ndarray:
    """A unit vector determined by `key`: lets a test check that every row still holds its own data."""
    return unit_rows(1, dim, seed=zlib.crc32(key.encode()))[0]


def moments(video_id: str, count: int, category: str = "circle") -> list[RowMeta]:
    captions = (f"a {category} moves left", f"clip {video_id}")
    return [RowMeta(video_id, 2.0 * i, 2.0 * i + 2, category, f"thumbs/{video_id}/{i}.jpg", captions)
            for i in range(count)]


def batch(video_ids: list[str], per_video: int = 2) -> tuple[dict[str, np.ndarray], list[RowMeta]]:
    """Arrays + rows for `per_video` moments of each video; each moment's vector is `vector_of(f"{id}@{start}")`."""
    rows = [row for video_id in video_ids for row in moments(video_id, per_video)]
    vectors = np.stack([vector_of(f"{row.video_id}@{row.start}") for row in rows])
    return {"video_feature": vectors}, rows


def add_videos(path, video_ids: list[str], fingerprint: str = "m", **kwargs) -> int:
    from vidsearch.store import store

    arrays, rows = batch(video_ids)
    return store.add(path, arrays, fingerprint=fingerprint, rows=rows, **kwargs)


def write_videos(path, video_ids: list[str], fingerprint: str = "m") -> int:
    from vidsearch.store import store

    arrays, rows = batch(video_ids)
    return store.write(path, arrays, fingerprint=fingerprint, rows=rows)


def assert_consistent(store) -> None:
    """Every live row's vector is the one its metadata says it should be."""
    rows = store.rows
    expected = [vector_of(f"{v}@{s}") for v, s in zip(rows.video_id, rows.start)]
    np.testing.assert_array_equal(store.array("video_feature"), np.array(expected).reshape(-1, DIM))


@pytest.fixture
def helpers():
    import types

    return types.SimpleNamespace(unit_rows=unit_rows, clustered=clustered, vector_of=vector_of, moments=moments,
                                 batch=batch, add_videos=add_videos, write_videos=write_videos,
                                 assert_consistent=assert_consistent, DIM=DIM)
