"""The engines benchmark at tiny sizes: every engine, persisted and reopened, finds the exact neighbours and a new
video's rows; exact top-10 and the report's choice of winner follow their stated rules."""

import json

import numpy as np
import pytest

from vidsearch.bench import engines as bench
from vidsearch.bench.__main__ import main

ROWS = 3000
QUERIES = 20
# At 3 000 rows (54 lists) 4-bit PQ codes rank the candidates loosely: re-rank more of them than at scale (a random
# half of the rows as candidates would give recall 0.5).
TINY_POINTS = {"faiss-ivf-pq64x4fs": {"nprobe": 54, "rerank": 80}, "faiss-ivf-pq32x4fs": {"nprobe": 54, "rerank": 150},
               "lancedb-ivfpq-default": {"refine": 50}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return bench.prepare(tmp_path_factory.mktemp("engines"), ROWS, QUERIES)


@pytest.mark.parametrize("name", list(bench.ENGINES))
def test_engine_reopened_from_disk_finds_the_exact_neighbours_and_new_rows(files, tmp_path, name):
    engine = bench.ENGINES[name]
    vectors = np.load(files["vectors"], mmap_mode="r")
    engine.build(vectors, tmp_path, 1)
    served = engine.open(tmp_path, vectors, 1)
    point = TINY_POINTS.get(name, served.points[-1])
    quality = bench._quality(served, point, np.load(files["query_file"]), QUERIES)
    assert quality["recall_at_10"] >= 0.9, (name, point, quality)
    assert quality["hard_recall_at_10"] >= 0.85, (name, point, quality)
    served.points = [point]
    assert bench._add_searchable(served, np.load(files["additions"])) > 0  # raises unless each new row is found


def test_exact_top10_merges_chunks_into_the_global_order(monkeypatch):
    monkeypatch.setattr(bench, "CHUNK", 7)
    rng = np.random.default_rng(3)
    vectors, queries = rng.standard_normal((60, 8), dtype=np.float32), rng.standard_normal((5, 8), dtype=np.float32)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert bench.exact_top10(vectors, queries).tolist() == expected.tolist()


def test_new_segment_rows_outrank_the_index_when_closer(tmp_path):
    segments = bench.Segments(tmp_path, first_id=100)
    batch = np.eye(4, 8, dtype=np.float32)
    assert segments.add(batch).tolist() == [100, 101, 102, 103]
    found = segments.merge(np.array([5, 6]), np.array([0.5, 0.2], np.float32), batch[2], 3)
    assert found.tolist() == [102, 5, 6]
    assert np.load(tmp_path / "segment-0000.npy").tolist() == batch.tolist()


def _records(points, build_s=1.0, anon=100.0, mapped=0.0, peak=300.0):
    return ([{"phase": "build", "build_s": build_s, "disk_bytes": 2**20, "peak_rss_mb": peak}]
            + [{"phase": "search", "nprobe": nprobe, "recall_at_10": recall, "hard_recall_at_10": recall / 2,
                "p50_ms": p50} for nprobe, recall, p50 in points]
            + [{"phase": "serve", "peak_rss_mb": peak, "anon_mb": anon, "index_mapped_mb": mapped,
                "vectors_mapped_mb": peak - anon - mapped, "open_s": 0.1, "add_searchable_ms": 3.0}])


def test_best_point_is_the_fastest_that_meets_the_recall_target():
    best = bench.best_point(_records([(8, 0.90, 0.5), (32, 0.96, 2.0), (64, 0.99, 4.0)]))
    assert best["settings"] == {"nprobe": 32} and best["p50_ms"] == 2.0 and best["recall_at_10"] == 0.96
    assert bench.best_point(_records([(8, 0.90, 0.5)])) is None


def test_winner_has_the_smallest_resident_working_set_among_engines_fast_enough(capsys):
    # "small" has more re-rank pages in its peak RSS, "fast" less anonymous memory but a 500 MB mapped index it scans;
    # exact search is too slow to compete.
    best = {1000: {"numpy-exact": bench.best_point(_records([(0, 1.0, 40.0)], anon=10.0, peak=200.0)),
                   "small": bench.best_point(_records([(16, 0.97, 2.0)], anon=50.0, peak=800.0)),
                   "fast": bench.best_point(_records([(16, 0.97, 0.5)], anon=20.0, mapped=500.0, peak=600.0))}}
    bench._summarise([1000], best)
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["winner"] == "small" and summary["ratio"] == 20.0
    assert summary["winner_figures"]["serve_resident_mb"] == 50.0
    assert summary["ratios_to_winner"]["fast"] == {"p50": 0.25, "serve_resident": 10.4, "serve_peak_rss": 0.75,
                                                   "build": 1.0}


def test_run_measures_each_engine_in_children_and_skips_builds_over_budget(capsys, tmp_path):
    assert main(["engines", "--sizes", "1000,1500", "--engines", "numpy-exact,faiss-ivf-flat", "--queries", "10",
                 "--build-budget", "-1", "--workdir", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = [line for line in lines if line.get("rows") == 1000 and "phase" in line]
    assert [(line["engine"], line["phase"]) for line in first if line["phase"] != "search"] == [
        ("numpy-exact", "build"), ("numpy-exact", "serve"), ("faiss-ivf-flat", "build"), ("faiss-ivf-flat", "serve")]
    assert first[0]["disk_bytes"] == 1000 * 512 * 4 + 128 and first[0]["peak_rss_mb"] > 0
    assert all(line["threads"] == 1 and line["add_searchable_ms"] > 0 for line in first if line["phase"] == "serve")
    skipped = [line for line in lines if "skipped" in line]
    assert [(line["engine"], line["rows"]) for line in skipped] == [("numpy-exact", 1500), ("faiss-ivf-flat", 1500)]
    summary = lines[-1]  # of 1 000 rows, the largest size measured; exact search owns the least memory
    assert summary["bench"] == "engines" and summary["rows"] == 1000
    assert summary["winner"] == "numpy-exact" and summary["ratio"] == 1.0
    assert list(tmp_path.iterdir()) == []
    recorded = tmp_path / "run.jsonl"
    recorded.write_text("\n".join(json.dumps(line) for line in lines))
    assert main(["engines", "--summarise", str(recorded)]) == 0
    assert capsys.readouterr().out.splitlines() == [json.dumps(line) for line in lines[-3:]]


def test_build_projected_linearly_from_the_last_size():
    assert bench.projected_build_s((100_000, 90.0), 1_000_000) == 900.0
