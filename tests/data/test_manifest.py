import json

import pytest

from vidsearch.data.manifest import ManifestError, VideoRecord, import_captions, load_manifest, save_manifest


def _record(video_id="v1", **changes):
    fields = dict(video_id=video_id, source=f"videos/{video_id}.mp4", captions=("a cat", "a small cat"),
                  split="train", category="animals")
    return VideoRecord(**{**fields, **changes})


def _write_lines(path, *objects):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))
    return path


def test_save_then_load_gives_the_same_records(tmp_path):
    records = [_record("v1"), _record("v2", split="test", category=None, start=1.5, end=4.0),
               _record("s1a", twin="s1b"), _record("s1b", twin="s1a")]
    path = save_manifest(records, tmp_path / "m.jsonl")
    assert load_manifest(path) == records
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_manifest_lines_follow_the_documented_schema(tmp_path):
    path = save_manifest([_record("v1"), _record("a", twin="b"), _record("b", twin="a")], tmp_path / "m.jsonl")
    first, second = (json.loads(line) for line in path.read_text().splitlines()[:2])
    assert first == {"video_id": "v1", "source": "videos/v1.mp4", "captions": ["a cat", "a small cat"],
                     "split": "train", "category": "animals", "start": None, "end": None}
    assert second["twin"] == "b"


def test_source_path_is_relative_to_the_manifest_directory(tmp_path):
    assert _record("v1").source_path(tmp_path) == tmp_path / "videos" / "v1.mp4"
    assert _record("v1", source="/data/v.mp4").source_path(tmp_path).as_posix() == "/data/v.mp4"


GOOD = {"video_id": "v1", "source": "v1.mp4", "captions": ["x"], "split": "train", "category": None,
        "start": None, "end": None}


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "split"}, "missing field(s) split"),
    ({**GOOD, "catgory": "x"}, "unknown field(s) catgory"),
    ({**GOOD, "split": "dev"}, "split must be one of train, val, test, not 'dev'"),
    ({**GOOD, "captions": "x"}, "captions must be a list"),
    ({**GOOD, "captions": ["ok", " "]}, "captions must be non-empty strings"),
    ({**GOOD, "start": 2.0}, "start and end must be given together"),
    ({**GOOD, "start": 3.0, "end": 2.0}, "need 0 <= start < end"),
    ({**GOOD, "video_id": ""}, "video_id must be a non-empty string"),
])
def test_load_names_file_and_line_of_a_bad_record(tmp_path, bad_line, message):
    path = _write_lines(tmp_path / "m.jsonl", {**GOOD, "video_id": "v0"}, "", bad_line)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


def test_load_refuses_a_duplicate_id_and_names_both_lines(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", GOOD, {**GOOD, "video_id": "v2"}, GOOD)
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: duplicate video_id 'v1' \(first on line 1\)"):
        load_manifest(path)


@pytest.mark.parametrize("twins", [
    [("a", "b", "train")],  # b missing
    [("a", "b", "train"), ("b", "c", "train"), ("c", None, "train")],  # b does not name a back
    [("a", "b", "train"), ("b", "a", "test")],  # split differs
])
def test_load_refuses_inconsistent_twins(tmp_path, twins):
    lines = [{**GOOD, "video_id": vid, "split": split, **({"twin": twin} if twin else {})}
             for vid, twin, split in twins]
    with pytest.raises(ManifestError, match="video 'a': twin 'b' must exist, name it back and have the same split"):
        load_manifest(_write_lines(tmp_path / "m.jsonl", *lines))


def test_import_csv_gathers_rows_of_one_video(tmp_path):
    (tmp_path / "in").mkdir()
    csv_path = tmp_path / "in" / "captions.csv"
    csv_path.write_text("video,caption,split,category\n"
                        "clips/dog.mp4,a dog runs,test,animals\n"
                        "clips/car.mp4,\"a red car, fast\",,\n"
                        "clips/dog.mp4,a dog chases a ball,,\n")
    records = import_captions(csv_path, manifest_dir=tmp_path / "out")
    assert records == [
        VideoRecord("dog", "../in/clips/dog.mp4", ("a dog runs", "a dog chases a ball"), "test", "animals"),
        VideoRecord("car", "../in/clips/car.mp4", ("a red car, fast",), "train", None),
    ]


def test_import_jsonl_accepts_caption_lists_and_a_default_split(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", {"video": "a.mp4", "captions": ["one", "two"]},
                        {"video": "a.mp4", "caption": "three", "category": "misc"})
    assert import_captions(path, manifest_dir=tmp_path, default_split="val") == [
        VideoRecord("a", "a.mp4", ("one", "two", "three"), "val", "misc")]


@pytest.mark.parametrize("content, message", [
    ("video,text\na.mp4,x\n", ":1: the header needs column(s) caption"),
    ("video,caption,split\na.mp4,x,train\na.mp4,y,test\n", ":3: split 'test' disagrees with 'train'"),
    ("video,caption\na/v.mp4,x\nb/v.mp4,y\n", ":3: "),
    ("video,caption,split\na.mp4,x,holdout\n", ":2: video 'a': split must be one of"),
    ("video,caption\n,x\n", ":2: missing video path"),
    ("video,caption\na.mp4,x\nthis row has no comma\n", ":3: expected video,caption[,split,category] but the row "
                                                         "has one field ('this row has no comma': is a comma missing?)"),
    ("video,caption\na.mp4,\n", ":2: empty caption for 'a.mp4'"),
    ("video,caption,split\na.mp4,  ,train\n", ":2: empty caption for 'a.mp4'"),
    ("video,caption\na.mp4,x,test\n", ":2: more fields than the header's (3 fields)"),
])
def test_import_csv_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(ManifestError) as caught:
        import_captions(path, manifest_dir=tmp_path)
    assert f"{path}{message}" in str(caught.value)
