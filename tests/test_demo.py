"""`vidsearch demo` on a small library: every stage runs once, a second run reuses everything."""

from vidsearch.cli import main as cli
from vidsearch.demo import SHIPPED_CHECKPOINT, held_out_captions, prepare_demo
from vidsearch.model.checkpoint import load_checkpoint
from vidsearch.store.store import Store


def test_demo_builds_once_then_reuses_everything(tmp_path):
    first = prepare_demo(workdir=tmp_path / "demo", videos=12)
    store = Store.open(first.paths.store)
    assert len(store.videos()) == 12 and set(first.seconds) == {"synth", "frames", "index"}
    assert (first.paths.store / "site.sqlite3").is_file()
    assert store.fingerprint == load_checkpoint(SHIPPED_CHECKPOINT).fingerprint
    assert held_out_captions(first.paths)
    prepare_demo(workdir=tmp_path / "demo", videos=12)
    assert Store.open(first.paths.store).version == store.version  # nothing re-indexed


def test_demo_command_prepares_without_serving(tmp_path, capsys):
    assert cli(["demo", "--workdir", str(tmp_path / "demo"), "--videos", "8", "--no-serve"]) == 0
    assert "demo ready" in capsys.readouterr().out


def test_the_shipped_checkpoint_tells_direction_apart(tmp_path):
    """Every held-out caption of a small demo library scores its own video above its time-reversed twin, and its top
    hit has the caption's colour, shape and direction (mean pooling would tie every twin)."""
    import numpy as np

    from vidsearch.data.manifest import load_manifest
    from vidsearch.data.synthetic import parse_caption
    from vidsearch.store.indexer import open_searcher

    report = prepare_demo(workdir=tmp_path / "demo", videos=40)
    records = {r.video_id: r for r in load_manifest(report.paths.manifest)}
    searcher = open_searcher(report.paths.store)
    store = searcher.store
    rows = {video_id: i for i, video_id in enumerate(store.rows.video_id)}
    features = store.array("video_feature")
    twins = right = total = 0
    for caption, video_id in held_out_captions(report.paths):
        query, _ = searcher.encode(caption)
        own, twin = features[rows[video_id]] @ query, features[rows[records[video_id].twin]] @ query
        twins += bool(own > twin + 1e-5)
        top = int(np.argmax(features @ query))
        right += parse_caption(records[store.rows.video_id[top]].captions[0]) == parse_caption(caption)
        total += 1
    print(f"{total} captions: twins {twins / total:.3f}, top hit right {right / total:.3f}")
    assert total >= 20 and twins / total >= 0.95 and right / total >= 0.85


def test_retrain_runs_the_recipe_and_skips_finished_stages(tmp_path, monkeypatch, capsys):
    """`vidsearch demo --retrain` with a miniature recipe of the same shape: a CLIP4Clip stage, then AIM + text."""
    from vidsearch import demo

    common = ["--batch-size", "8", "--lr", "5e-4", "--twins-in-batch", "--seed", "0", "--workers", "0"]
    monkeypatch.setattr(demo, "TRAINING_RECIPE", [
        ["synth", "--out", "library", "--videos", "24", "--seed", "1"],
        ["frames", "library/videos", "--out", "cache", "--size", "48", "--frames", "4"],
        ["train", "--data", "library/manifest.jsonl", "--frames", "cache", "--out", "clip4clip", "--mode", "full",
         "--head", "meanP", "--model", "vidsearch-demo", "--frames-per-video", "4", "--epochs", "1", *common],
        ["train", "--data", "library/manifest.jsonl", "--frames", "cache", "--out", "aim-text", "--mode", "aim+text",
         "--init", "clip4clip/epoch-1", "--epochs", "1", *common],
        ["evaluate", "--checkpoint", "aim-text/best", "--data", "library/manifest.jsonl", "--frames", "cache"],
    ])
    monkeypatch.setattr(demo, "TRAINED_CHECKPOINT", "aim-text/best")
    report = prepare_demo(workdir=tmp_path / "demo", videos=8, retrain=True)
    assert report.checkpoint == tmp_path / "demo" / "training" / "aim-text" / "best"
    trained = load_checkpoint(report.checkpoint)
    assert trained.adapters is not None and Store.open(report.paths.store).fingerprint == trained.fingerprint
    printed = capsys.readouterr().out
    assert "R@1" in printed and printed.count("demo: vidsearch ") == 5
    prepare_demo(workdir=tmp_path / "demo", videos=8, retrain=True)  # synth and both trainings are done: skipped
    assert capsys.readouterr().out.count("demo: vidsearch ") == 2  # frames (resumable) and evaluate run again


def test_the_shipped_checkpoint_names_no_directory_of_the_machine_it_was_trained_on():
    from vidsearch.model.checkpoint import read_checkpoint_config

    extra = read_checkpoint_config(SHIPPED_CHECKPOINT)["extra"]
    assert {key: extra[key] for key in ("init", "data")} == {"init": "../motion2/epoch-1",
                                                            "data": "../library-large/manifest.jsonl"}, extra
    # The fingerprint (what stores are stamped with) covers the structure and weights, not `extra`: unchanged.
    assert load_checkpoint(SHIPPED_CHECKPOINT).fingerprint == \
        "d14719e90a658090d9a36d6e7cb860664ba4bf340f33c3081bee2fab8216e2a0"
