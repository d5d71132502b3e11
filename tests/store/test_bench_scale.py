import json

import pytest

from vidsearch.bench.__main__ import main
from vidsearch.store import index as ix


def test_quick_run_measures_the_served_index_and_the_reader_built_baseline(capsys, monkeypatch):
    import faiss  # noqa: F401  # a [dev] dependency: missing, this fails rather than skips
    monkeypatch.setattr(ix, "IVF_MIN_ROWS", 1000)  # the baseline: the IVF-flat index readers used to build
    assert main(["scale", "--quick", "--adds", "3", "--queries", "30"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    record, summary = lines[0], lines[-1]
    assert record["rows"] == 20_000 and record["index"] == "ivf-pq+rerank"
    assert record["recall_at_10"] >= 0.9, f"re-ranked IVF-PQ recall@10 on clustered data: {record['recall_at_10']}"
    assert record["baseline_index"] == "faiss-ivf" and record["baseline_recall_at_10"] >= 0.9, record
    assert 0 <= record["recall_at_10_random_queries"] <= 1 and record["adds"] == 3
    assert record["disk_bytes"] > record["vector_bytes"] == 20_000 * 512 * 4
    assert summary["bench"] == "scale" and summary["ratio"] == pytest.approx(
        record["baseline_searchable_s"] / record["searchable_p50_s"], rel=0.01)
