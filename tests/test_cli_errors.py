"""What a user sees when something goes wrong on the command line: one line, the right exit status, nothing created."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vidsearch
from vidsearch.cli import _count, _format_hits, _index_summary, main
from vidsearch.store.indexer import IndexReport
from vidsearch.store.search import Moment, SearchResult, TextMatch, VideoHit

SRC = str(Path(vidsearch.__file__).parents[1])


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vidsearch {command}: error: "), err
    return lines[0]


# --- 15.6: convert, Ctrl-C, closed pipes --------------------------------------------------------------------------


def test_convert_of_a_malformed_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "ViT-B-32.pt").write_bytes(b"\x00not weights at all\n")
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "ViT-B-32.pt"), "--out", str(out)]) == 2
    assert "unknown format" in _one_error_line(capsys, "convert")
    assert not out.exists()


def test_ctrl_c_says_in_one_line_that_the_command_can_be_resumed(tmp_path, capsys, monkeypatch):
    import vidsearch.video.cache

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vidsearch.video.cache, "build_cache", interrupted)
    (tmp_path / "clip.mp4").write_bytes(b"")
    try:
        status = main(["frames", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "cache")])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped: the user sees a traceback")
    assert status == 130
    assert capsys.readouterr().err == ("vidsearch frames: interrupted; run the same command again to resume: "
                                       "finished videos are kept and skipped\n")


def test_a_decoding_worker_leaves_ctrl_c_to_its_parent():
    """Ctrl-C reaches the whole process group: a worker printing its own KeyboardInterrupt traceback (and dying)
    would bury the parent's one line."""
    worker = subprocess.Popen([sys.executable, "-m", "vidsearch.video.workers", "json:dumps"], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": SRC})
    try:
        worker.stdin.write('"before"\n')
        worker.stdin.flush()
        assert json.loads(worker.stdout.readline()) == {"result": '"before"'}
        worker.send_signal(signal.SIGINT)
        worker.stdin.write('"after"\n')
        worker.stdin.flush()
        reply = worker.stdout.readline()
    finally:
        worker.stdin.close()
        stderr = worker.stderr.read()
        worker.wait(timeout=60)
    assert reply and json.loads(reply) == {"result": '"after"'}, stderr
    assert stderr == ""


def test_search_into_a_closed_pipe_ends_quietly(tmp_path):
    """`vidsearch search ... | head`: the reader goes away; no BrokenPipeError traceback, SIGPIPE's status."""
    child = textwrap.dedent("""
        import sys, types
        hit = types.SimpleNamespace(moments=[], score=0.5, video_id="clip", category=None, text_match=False,
                                    confidence_label="low")
        result = types.SimpleNamespace(mode="vector", hits=[hit] * 5000, query="q", index="flat",
                                       timings_ms={"search": 1.0}, confident=False)
        indexer = types.ModuleType("vidsearch.store.indexer")  # a stand-in: no model, no torch to import
        indexer.open_searcher = lambda store, **_: types.SimpleNamespace(search=lambda query, options: result)
        sys.modules["vidsearch.store.indexer"] = indexer
        from vidsearch.cli import main
        sys.exit(main(["search", "a dog", "--store", "store"]))
    """)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", child], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": SRC}, timeout=300)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


# --- 15.5: a busy port ---------------------------------------------------------------------------------------------


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_busy_port_says_so_before_any_work(busy_port, tmp_path, capsys, monkeypatch):
    import vidsearch.web.server

    monkeypatch.setattr(vidsearch.web.server, "serve", lambda **kwargs: pytest.fail("the server was started"))
    assert main(["serve", "--store", str(tmp_path / "store"), "--port", str(busy_port)]) == 2
    assert _one_error_line(capsys, "serve") == (
        f"vidsearch serve: error: port {busy_port} on 127.0.0.1 is in use (another vidsearch serve or demo?); "
        f"stop it or pick another port with --port, e.g. --port {busy_port + 1}")


def test_demo_on_a_busy_port_says_so_before_preparing_anything(busy_port, tmp_path, capsys, monkeypatch):
    import vidsearch.demo

    monkeypatch.setattr(vidsearch.demo, "prepare_demo", lambda **kwargs: pytest.fail("the demo was prepared"))
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--port", str(busy_port)]) == 2
    assert f"port {busy_port} on 127.0.0.1 is in use" in _one_error_line(capsys, "demo")
    assert not (tmp_path / "demo").exists()


# --- 15.7: wrong input creates nothing -----------------------------------------------------------------------------


def test_serve_of_a_mistyped_store_creates_nothing_and_says_how_to_make_one(tmp_path, capsys):
    store = tmp_path / "TYPO"
    assert main(["serve", "--store", str(store), "--port", "0"]) == 2
    line = _one_error_line(capsys, "serve")
    assert f"{store} is not a feature store" in line and f"vidsearch index --frames CACHE --store {store}" in line
    assert not store.exists()


def test_frames_of_a_missing_input_leaves_no_cache(tmp_path, capsys):
    assert main(["frames", str(tmp_path / "Vidoes"), "--out", str(tmp_path / "cache")]) == 2
    assert _one_error_line(capsys, "frames") == (f"vidsearch frames: error: no such file or directory: "
                                                 f"{tmp_path / 'Vidoes'}; nothing was created")
    assert not (tmp_path / "cache").exists()


def test_frames_of_a_folder_without_videos_warns(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "notes.txt").write_text("no video here")
    assert main(["frames", str(tmp_path / "videos"), "--out", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vidsearch frames: warning: no video files in {tmp_path / 'videos'} (looked for .avi "), err
    assert err.count("\n") == 1 and not (tmp_path / "cache").exists()


# --- 15.9: where weights come from; offline pretrained ---------------------------------------------------------------


def test_a_missing_weights_file_says_where_weights_come_from(tmp_path, capsys):
    weights = tmp_path / "ViT-B-32.pt"
    assert main(["index", "--weights", str(weights), "--frames", str(tmp_path / "cache"),
                 "--store", str(tmp_path / "store")]) == 2
    line = _one_error_line(capsys, "index")
    assert f"{weights}: no such file or directory. CLIP weights come from OpenAI's CLIP release" in line
    for source in ("open_clip", "Hugging Face CLIP directory", "safetensors, a torch.save file"):
        assert source in line
    assert not (tmp_path / "store").exists()


def test_offline_pretrained_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub
    import open_clip

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setenv("HOME", str(tmp_path))  # nothing in a download cache
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("a download was attempted"))
    assert main(["index", "--pretrained", "openai", "--frames", str(tmp_path / "cache"),
                 "--store", str(tmp_path / "store")]) == 2
    assert _one_error_line(capsys, "index").startswith(
        "vidsearch index: error: ViT-B-32:openai: open_clip's 'openai' weights for ViT-B-32 are not in the local cache "
        "and huggingface.co cannot be reached (offline?). Download them once on a machine with internet and pass "
        "--weights FILE; CLIP weights come from")


# --- 15.14: what index and search print ----------------------------------------------------------------------------


def test_index_summary_counts_in_words_and_says_when_nothing_changed():
    assert _index_summary(IndexReport(videos_added=1, rows_added=1, videos_skipped=1, version=3, seconds=0.25)) == \
        "indexed 1 video (1 row), 1 video already in the store, 0 failed in the cache; store version 3 in 0.2 s"
    assert _index_summary(IndexReport(videos_skipped=8, seconds=0.1)) == \
        "nothing new to index: 8 videos already in the store, 0 failed in the cache; the store is unchanged (0.1 s)"
    assert [_count(n, "video") for n in (0, 1, 2)] == ["0 videos", "1 video", "2 videos"]


def _hit(video_id: str, score: float, fused: float | None = None, text_match: bool = False) -> VideoHit:
    return VideoHit(video_id, score, "ball", None, [Moment(0.0, 2.0, score, None)], 1, text_match, fused)


def test_search_output_counts_one_video_in_the_singular():
    result = SearchResult("a dog", "vector", [_hit("clip", 0.5)], [], 1, "flat", False, {"search": 1.0})
    assert _format_hits(result).splitlines()[0] == "1 video for 'a dog' (flat, 1.0 ms)"


# --- 15.2: text mode prints its matches, hybrid the fused score that orders the hits ---------------------------------


def test_text_mode_prints_the_caption_matches():
    matches = [TextMatch("syn001a", "ball", ["a red ball rolls", "a red ball"]), TextMatch("syn002b", None, ["red"])]
    result = SearchResult("red", "text", [], matches, 1, None, False, {"text": 0.5})
    assert _format_hits(result).splitlines() == [
        "2 videos for 'red' (caption text, 0.5 ms)",
        "  1. syn001a  [ball]  2 captions: 'a red ball rolls'",
        "  2. syn002b  1 caption: 'red'",
    ]


def test_hybrid_mode_prints_the_fused_score_that_orders_the_hits_and_the_cosine_beside_it():
    hits = [_hit("only-text", 0.1, fused=1 / 61, text_match=True), _hit("both", 0.3, fused=1 / 62, text_match=True),
            _hit("vector", 0.4, fused=1 / 63)]
    result = SearchResult("red", "hybrid", hits, [], 1, "exact", False, {"total": 2.0})
    assert _format_hits(result).splitlines() == [
        "3 videos for 'red' (exact, 2.0 ms); fused rank score, then cosine",
        "  1. 0.0164  cos 0.100  only-text 0.0–2.0 s  [ball]  caption match",
        "  2. 0.0161  cos 0.300  both 0.0–2.0 s  [ball]  caption match",
        "  3. 0.0159  cos 0.400  vector 0.0–2.0 s  [ball]",
    ]


def test_search_text_mode_prints_as_many_videos_as_its_json(tmp_path, capsys, make_keyframe_library):
    root = make_keyframe_library(tmp_path, videos=4, size=32, seconds=2.0, frames=2)
    store = str(root / "store")
    assert main(["index", "--random-weights", "--model", "vidsearch-tiny", "--frames", str(root / "cache"),
                 "--store", store, "--data", str(root / "lib" / "manifest.jsonl")]) == 0
    capsys.readouterr()
    assert main(["search", "a", "--store", store, "--mode", "text", "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)["text_matches"]
    assert main(["search", "a", "--store", store, "--mode", "text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(matches) == 4 and lines[0].startswith("4 videos for 'a' (caption text, "), lines
    assert [line.split()[1] for line in lines[1:]] == [match["video_id"] for match in matches], lines


def test_a_second_index_with_nothing_new_prints_no_progress_bar_and_no_version_none(tmp_path, capsys,
                                                                                     make_keyframe_library):
    root = make_keyframe_library(tmp_path, videos=2, size=32, seconds=2.0, frames=2)
    command = ["index", "--random-weights", "--model", "vidsearch-tiny", "--frames", str(root / "cache"),
               "--store", str(root / "store")]
    assert main(command) == 0
    capsys.readouterr()
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert out.startswith("nothing new to index: 2 videos already in the store, 0 failed in the cache; the store "
                          "is unchanged ("), out
    assert "index:" not in err, err


# --- 15.17: evaluate on a checkpoint a run has not written; --help ---------------------------------------------------


def test_evaluate_a_best_checkpoint_the_run_never_wrote_says_why(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    (run / "state").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"train": {"val_split": "val"}}))
    (run / "state" / "trainer.json").write_text(json.dumps({"progress": {"step": 3}}))
    (run / "state" / "config.json").write_text("{}")
    assert main(["evaluate", "--checkpoint", str(run / "best"), "--data", str(tmp_path / "m.jsonl"),
                 "--frames", str(tmp_path / "cache")]) == 2
    assert _one_error_line(capsys, "evaluate") == (
        f"vidsearch evaluate: error: {run / 'best'} does not exist: training stopped at step 3, before its first "
        f"validation (validation runs at the end of an epoch); checkpoints in {run}: state; continue the run with "
        f"`vidsearch train ... --out {run} --resume`")


def test_evaluate_of_a_missing_directory_outside_a_run(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--data", "m.jsonl", "--frames", "c"]) == 2
    assert f"{tmp_path / 'nope'} does not exist; a checkpoint is a directory" in _one_error_line(capsys, "evaluate")


@pytest.mark.parametrize("command, shown, hidden", [
    ("frames", ["--frames FRAMES up to this many keyframes per video", "(default: 12) --size",
                "(default: uniform)"], ["--segment-seconds S moments: fixed windows of S seconds (default"]),
    ("evaluate", ["--split {train,val,test} split to evaluate (default: test)"], ["(default: False)"]),
    ("train", ["--seed SEED (default: 0)", "--epochs EPOCHS (default: 5)"], ["(default: None)"]),
])
def test_help_shows_the_defaults(command, shown, hidden, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    for part in shown:
        assert part in text, text
    for part in hidden:
        assert part not in text, text


# --- 15.11: a model of the synthetic library meets other footage --------------------------------------------------


def _cache_with_ids(root: Path, ids: list[str]) -> Path:
    """`vidsearch synth` of len(ids) videos renamed to `ids`, then `vidsearch frames` into root/cache."""
    assert main(["synth", "--out", str(root / "lib"), "--videos", str(len(ids)), "--size", "48", "--seconds",
                 "2"]) == 0
    for path, name in zip(sorted((root / "lib" / "videos").glob("*.mp4")), ids):
        path.rename(path.with_name(f"{name}.mp4"))
    assert main(["frames", str(root / "lib" / "videos"), "--out", str(root / "cache"), "--frames", "2", "--size",
                 "48", "--workers", "1"]) == 0
    return root / "cache"


@pytest.mark.parametrize("ids, warned", [(["holiday", "syn00000b"], True), (["syn00000a", "syn00000b"], False)])
def test_the_shipped_checkpoint_warns_when_it_indexes_footage_not_from_the_synthetic_library(tmp_path, capsys, ids,
                                                                                             warned):
    from vidsearch.demo import SHIPPED_CHECKPOINT

    cache = _cache_with_ids(tmp_path, ids)
    capsys.readouterr()
    assert main(["index", "--checkpoint", str(SHIPPED_CHECKPOINT), "--frames", str(cache), "--store",
                 str(tmp_path / "store")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    expected = [f"vidsearch index: warning: the model {SHIPPED_CHECKPOINT} was trained on the synthetic moving-shapes "
                "library only, but the cache has 1 other video(s) (holiday): search results for them will be "
                "meaningless; index them with CLIP weights (--weights, --pretrained) or a checkpoint trained on "
                "footage like them"]
    assert err == (expected if warned else []), err


def test_training_records_when_its_data_was_the_synthetic_library(tmp_path):
    from vidsearch.data.manifest import VideoRecord, load_manifest
    from vidsearch.data.synthetic import generate_library
    from vidsearch.train.run import _training_library

    records = load_manifest(generate_library(tmp_path, videos=2, size=16, seconds=1.0))
    assert _training_library(records) == {"training_library": "synthetic"}
    own = VideoRecord(video_id="holiday", source="videos/holiday.mp4", split="train", captions=("a red ball moves up",))
    renamed = dataclasses.replace(records[0], video_id="syn00009a", captions=("my cat sleeps",))
    assert _training_library([*records, own]) == {} and _training_library([*records, renamed]) == {}
