import json

from vidsearch.bench.__main__ import main


def test_quick_run_times_each_example_seen_once_and_in_9_views(capsys):
    assert main(["views", "--quick", "--frames", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    measured = {(line["example"], line["views"]): line["median_s"] for line in lines[:-1]}
    assert set(measured) == {("clip", 1), ("clip", 9), ("image", 1), ("image", 9)}
    summary = lines[-1]
    assert summary["bench"] == "views" and summary["model"] == "tiny" and summary["frames"] == 4
    assert summary["median_s"] == {f"{kind}/{views}": seconds for (kind, views), seconds in measured.items()}
    # the ratio is of the unrounded medians; the lines carry them rounded to the microsecond
    assert abs(summary["ratio"] - measured["clip", 9] / measured["clip", 1]) <= 0.005 * summary["ratio"] + 0.001
