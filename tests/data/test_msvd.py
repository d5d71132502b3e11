import pickle

import pytest

from vidsearch.cli import main
from vidsearch.data.manifest import ManifestError, VideoRecord, load_manifest
from vidsearch.data.msvd import convert_msvd, safe_load_pickle


def _write_msvd(root, captions=None):
    """A miniature of CLIP4Clip's MSVD annotations, in the real formats."""
    root.mkdir(parents=True, exist_ok=True)
    captions = captions or {
        "-4wsuPCjDBc_5_15": [["a", "squirrel", "is", "eating"], ["a", "squirrel", "eats", "a", "nut"]],
        "-7KMZQEsJW4_205_208": [["a", "man", "is", "playing", "a", "guitar"]],
        "-8y1Q0rA3n8_108_115": [["someone", "is", "slicing", "an", "onion"], ["a", "person", "cuts", "onion"]],
    }
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    ids = list(captions)
    (root / "train_list.txt").write_text("".join(f"{vid}\n" for vid in ids[:2]))
    (root / "val_list.txt").write_text("")
    (root / "test_list.txt").write_text("".join(f"{vid}\n\n" for vid in ids[2:]))
    return root


def test_convert_joins_tokens_and_follows_the_split_lists(tmp_path):
    root = _write_msvd(tmp_path / "msvd")
    records = convert_msvd(data_dir=root, videos_dir=root / "YouTubeClips", manifest_dir=root)
    assert records == [
        VideoRecord("-4wsuPCjDBc_5_15", "YouTubeClips/-4wsuPCjDBc_5_15.avi",
                    ("a squirrel is eating", "a squirrel eats a nut"), "train"),
        VideoRecord("-7KMZQEsJW4_205_208", "YouTubeClips/-7KMZQEsJW4_205_208.avi",
                    ("a man is playing a guitar",), "train"),
        VideoRecord("-8y1Q0rA3n8_108_115", "YouTubeClips/-8y1Q0rA3n8_108_115.avi",
                    ("someone is slicing an onion", "a person cuts onion"), "test"),
    ]


def test_import_command(tmp_path):
    root = _write_msvd(tmp_path / "msvd")
    assert main(["import", "msvd", str(root), "--videos", str(root / "clips"), "--out", str(root / "m.jsonl")]) == 0
    assert [r.split for r in load_manifest(root / "m.jsonl")] == ["train", "train", "test"]


class _MakesMarker:
    """Unpickling this object calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"video": [["a", "b"]], "evil": _MakesMarker(marker)})
    (tmp_path / "raw-captions.pkl").write_bytes(payload)
    with pytest.raises(ManifestError, match=r"refusing to load global io\.open"):
        safe_load_pickle(tmp_path / "raw-captions.pkl")
    assert not marker.exists()
    # the payload is live: the ordinary unpickler runs it
    pickle.loads(pickle.dumps({"evil": _MakesMarker(tmp_path / "proof")}))["evil"].close()
    assert (tmp_path / "proof").exists() and not marker.exists()


def test_captions_that_are_not_token_lists_are_refused(tmp_path):
    root = _write_msvd(tmp_path / "msvd", captions={"v": [["ok"], [1, 2]]})
    with pytest.raises(ManifestError, match="video 'v': a caption must be a list of token strings"):
        convert_msvd(data_dir=root, videos_dir=root, manifest_dir=root)


def test_a_listed_video_without_captions_is_an_error(tmp_path):
    root = _write_msvd(tmp_path / "msvd")
    (root / "val_list.txt").write_text("missing_video\n")
    with pytest.raises(ManifestError, match="val_list.txt: video 'missing_video' has no captions"):
        convert_msvd(data_dir=root, videos_dir=root, manifest_dir=root)
