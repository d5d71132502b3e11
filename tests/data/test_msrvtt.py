import json

import pytest

from vidsearch.cli import main
from vidsearch.data.manifest import ManifestError, VideoRecord, load_manifest
from vidsearch.data.msrvtt import convert_msrvtt


def _write_msrvtt(root):
    """A miniature of CLIP4Clip's msrvtt_data.zip, in the real formats."""
    root.mkdir(parents=True, exist_ok=True)
    videos = [{"category": c, "url": f"https://youtu.be/{i}", "video_id": f"video{i}", "start time": 1.0,
               "end time": 11.0, "split": "train" if i < 3 else "test", "id": i}
              for i, c in enumerate([9, 0, 13, 16])]
    sentences = [{"caption": text, "video_id": vid, "sen_id": n} for n, (vid, text) in enumerate([
        ("video0", "a car drives down a road"), ("video1", "a man sings a song"), ("video0", "a red car "),
        ("video2", "a cat plays"), ("video3", "someone cooks food"), ("video3", "a kitchen scene")])]
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr3,video3,\"a person cooks, in a kitchen\"\n")
    return root


def _convert(root, **kwargs):
    return convert_msrvtt(data_json=root / "MSRVTT_data.json", train_csv=root / "MSRVTT_train.9k.csv",
                          test_csv=root / "MSRVTT_JSFUSION_test.csv", videos_dir=root / "MSRVTT_Videos",
                          manifest_dir=root, **kwargs)


def test_train_videos_keep_all_captions_and_test_videos_the_jsfusion_sentence(tmp_path):
    records = _convert(_write_msrvtt(tmp_path / "msrvtt"))
    assert records == [
        VideoRecord("video0", "MSRVTT_Videos/video0.mp4", ("a car drives down a road", "a red car"), "train",
                    "vehicles/autos"),
        VideoRecord("video1", "MSRVTT_Videos/video1.mp4", ("a man sings a song",), "train", "music"),
        VideoRecord("video2", "MSRVTT_Videos/video2.mp4", ("a cat plays",), "train", "animals/pets"),
        VideoRecord("video3", "MSRVTT_Videos/video3.mp4", ("a person cooks, in a kitchen",), "test", "food/drink"),
    ]


def test_val_videos_come_from_train_reproducibly(tmp_path):
    root = _write_msrvtt(tmp_path / "msrvtt")
    first = [r.split for r in _convert(root, val_videos=1, seed=3)]
    assert first == [r.split for r in _convert(root, val_videos=1, seed=3)]
    assert sorted(first) == ["test", "train", "train", "val"]
    assert first[3] == "test"


def test_a_train_video_without_sentences_is_an_error(tmp_path):
    root = _write_msrvtt(tmp_path / "msrvtt")
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo9\n")
    with pytest.raises(ManifestError, match="video 'video9' has no sentences in MSRVTT_data.json"):
        _convert(root)


def test_a_test_csv_in_the_wrong_format_is_an_error(tmp_path):
    root = _write_msrvtt(tmp_path / "msrvtt")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("video,caption\nvideo3,x\n")
    with pytest.raises(ManifestError, match="MSRVTT_JSFUSION_test.csv:1: expected columns key,vid_key,video_id"):
        _convert(root)


def test_import_command_writes_a_loadable_manifest(tmp_path, capsys):
    root = _write_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "manifests" / "msrvtt.jsonl"
    assert main(["import", "msrvtt", str(root), "--out", str(out)]) == 0
    records = load_manifest(out)
    assert [r.source for r in records][:1] == ["../msrvtt/MSRVTT_Videos/video0.mp4"]
    assert "wrote 4 videos" in capsys.readouterr().out


def test_import_command_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["import", "msrvtt", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "vidsearch import: error:" in capsys.readouterr().err
