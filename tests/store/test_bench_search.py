import json

from vidsearch.bench.__main__ import main
from vidsearch.bench.search import clustered_vectors, query_texts


def test_clustered_vectors_are_unit_rows_that_cluster():
    vectors = clustered_vectors(20_000, seed=1)
    assert vectors.shape == (20_000, 512) and vectors.dtype.name == "float32"
    assert abs(float((vectors ** 2).sum(1).mean()) - 1.0) < 1e-5
    nearest = (vectors[:100] @ vectors.T)
    nearest[range(100), range(100)] = -1
    assert nearest.max(1).mean() > 0.4  # cluster mates score ≈ 0.5; in a uniform sample the nearest scores ≈ 0.2


def test_query_texts_are_distinct():
    texts = query_texts(50)
    assert len(set(texts)) == 50


def test_quick_run_reports_every_size_and_the_seed_ratio(capsys):
    assert main(["search", "--quick", "--queries", "3", "--recall-queries", "20", "--clusters", "64",
                 "--index-min-rows", "1000"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["bench"] == "search" and summary["ratio"] > 0
    assert set(summary["p50_ms"]) == {"1000/exact", "1000/faiss", "10000/exact", "10000/faiss"}
    recall = summary["recall_at_10"]
    assert recall["10000"] >= 0.9 and recall["1000"] >= 0.9, f"persisted index recall@10 on clustered data: {recall}"
    assert set(summary["recall_at_10_random_queries"]) == {"1000", "10000"}
    faiss = [line for line in lines if line.get("index") == "ivf-pq+rerank" and "p50_ms" in line]
    assert len(faiss) == 2, "the faiss timings must come from the persisted index"
