"""What a user sees when something goes wrong on the command line: one line, the right exit status, nothing created."""

from __future__ import annotations

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
        hit = types.SimpleNamespace(moments=[], score=0.5, video_id="clip", category=None, confidence_label="low")
        result = types.SimpleNamespace(hits=[hit] * 5000, query="q", index="flat", timings_ms={"search": 1.0},
                                       confident=False)
        indexer = types.ModuleType("vidsearch.store.indexer")  # a stand-in: no model, no torch to import
        indexer.open_searcher = lambda store, **kwargs: types.SimpleNamespace(search=lambda query, options: result)
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


def test_search_output_counts_one_video_in_the_singular():
    import types

    hit = types.SimpleNamespace(moments=[], score=0.5, video_id="clip", category=None, confidence_label="high")
    result = types.SimpleNamespace(hits=[hit], query="a dog", index="flat", timings_ms={"search": 1.0},
                                   confident=True)
    assert _format_hits(result).splitlines()[0] == "1 video for 'a dog' (flat, 1.0 ms)"


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
