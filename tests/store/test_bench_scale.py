import json

import pytest

from vidsearch.bench.__main__ import main


def test_small_run_reports_bytes_per_vector_and_per_row(capsys):
    import faiss  # noqa: F401  # a [dev] dependency: missing, this fails rather than skips
    assert main(["scale", "--rows", "3000", "--queries", "20", "--metadata-rows", "400"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    indexes, metadata, summary = lines[:-2], lines[-2], lines[-1]
    assert [line["code_bytes"] for line in indexes] == [2048, 512, 64, 32, 32]
    assert indexes[-1]["index"] == "ivf-pq64x4fs + exact re-rank of 200"
    assert all(0 <= line["recall_at_10"] <= 1 for line in indexes)
    assert metadata["rows"] == metadata["table_rows"] == 400 and metadata["videos"] == 100
    assert metadata["disk_bytes_per_row"] > 0 and metadata["python_bytes_per_row"] > 0
    assert summary["bench"] == "scale" and summary["ratio"] == 64.0
