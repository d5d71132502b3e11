"""`vidsearch search --clip`: a video clip, sampled as the library's keyframes were, encoded by the video tower of
either runtime and searched; a library video given as a clip finds its own row."""

import json

import numpy as np
import pytest

from vidsearch.cli import main
from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import generate_library
from vidsearch.model.source import ModelSource
from vidsearch.data.sampling import frame_positions
from vidsearch.store.indexer import (_patch_size, encode_clip, encode_clips, encode_rows, image_views, index_cache,
                                     model_frames, rows_of)
from vidsearch.store.search import stored_vectors
from vidsearch.store.store import Store
from vidsearch.video.cache import open_cache
from vidsearch.video.clips import decode_clip, query_frame_config

TINY = ModelSource(backbone="vidsearch-tiny", num_frames=4)


@pytest.fixture(scope="module")
def whole_videos(tmp_path_factory):
    """Four 6 s videos, a keyframe cache of whole videos (6 keyframes each, more than the model's 4) and its store."""
    from vidsearch.video.cache import build_cache

    root = tmp_path_factory.mktemp("whole")
    generate_library(root / "lib", videos=4, seed=11, size=64, seconds=6.0, fps=4.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=6, size=64), workers=1)
    model = TINY.load()
    index_cache(model=model, source=TINY, cache_dir=root / "cache", store_dir=root / "store")
    return root, model


def test_a_library_video_as_a_clip_is_encoded_as_its_row_seen_in_the_9_views(whole_videos):
    """The clip's keyframes are the row's (same pixels); its vector is the mean of the row's encoding over the 9
    shifted views, the unshifted one of which is the stored vector itself."""
    root, model = whole_videos
    store, cache = Store.open(root / "store"), open_cache(root / "cache")
    config = query_frame_config(model, store.info["frames"])
    assert config == FrameConfig(frames=6, size=64)
    for row, video_id in enumerate(store.rows.video_id):
        clip = decode_clip(cache.entry(video_id).source, config)
        assert len(clip.frames) == 6
        np.testing.assert_array_equal(clip.frames, cache.read_frames(video_id))
        patch = _patch_size(model) * 64 / model.image_size  # a patch, in keyframe pixels
        positions, mask = frame_positions(len(clip.frames), model_frames(model), rng=None)  # as a row's
        views = np.stack([image_views(frame, size=64, patch=patch) for frame in clip.frames[positions]], axis=1)
        per_view = encode_clips(model, views, np.repeat(mask[None], 9, axis=0))
        np.testing.assert_allclose(per_view[4], stored_vectors(store, "video_feature", np.array([row]))[0],
                                   atol=1e-5, err_msg=f"{video_id}: the unshifted view is not the stored row")
        mean = per_view.mean(axis=0)
        np.testing.assert_allclose(encode_clip(model, clip.frames), mean / np.linalg.norm(mean), atol=1e-5,
                                   err_msg=video_id)
        np.testing.assert_allclose(encode_clip(model, clip.frames, views=1), per_view[4], atol=1e-5, err_msg=video_id)
    with pytest.raises(ValueError, match="an example is seen in 1 or 9 views, not 4"):
        encode_clip(model, clip.frames, views=4)


def test_cli_search_by_clip_finds_the_video_itself_first(whole_videos, capsys):
    root, _ = whole_videos
    store = Store.open(root / "store")
    video_id = sorted(store.videos())[2]
    source = open_cache(root / "cache").entry(video_id).source
    assert main(["search", "--clip", source, "--store", str(root / "store"), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == f"clip {video_id}.mp4" and result["mode"] == "vector" and len(result["hits"]) == 3
    # The tiny random model pools frames by their mean: a video and its time-reversed twin (ids …a, …b) are the same
    # footage to it, and the clip is its row seen in 9 shifted views, not the row itself: either may come first.
    footage = {video_id, video_id[:-1] + ("b" if video_id.endswith("a") else "a")}
    assert {hit["video_id"] for hit in result["hits"][:2]} == footage, result["hits"]
    assert result["hits"][0]["score"] > 0.9, result["hits"][0]
    timings = result["timings_ms"]  # the clip's decode and encode are counted, as the site counts them
    assert timings["decode"] > 0 and timings["encode"] > 0, timings
    assert timings["total"] >= timings["decode"] + timings["encode"] + timings["vector"] - 0.01, timings
    assert main(["search", "--clip", source, "--store", str(root / "store"), "-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"2 videos for 'clip {video_id}.mp4'")
    # Seen as it is, the clip is the video's own row: itself first, at cosine 1.
    assert main(["search", "--clip", source, "--store", str(root / "store"), "-k", "3", "--views", "1",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["video_id"] == video_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-5), hits
    with pytest.raises(SystemExit):
        main(["search", "--clip", source, "--store", str(root / "store"), "--views", "4"])
    assert "--views: invalid choice: 4 (choose from 1, 9)" in capsys.readouterr().err


def test_cli_clip_in_the_web_library_moments(web_library, capsys):
    """A library cut into 2 s moments: the clip is one moment of the whole video, which still finds its video."""
    video_id = sorted(r.video_id for r in web_library.records)[0]
    source = open_cache(web_library.cache).entry(video_id).source
    assert main(["search", "--clip", source, "--store", str(web_library.store), "-k", "8", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [hit["video_id"] for hit in hits].index(video_id) < 3, hits


@pytest.mark.parametrize("content, message", [
    (b"plain text, not a video", "not a video vidsearch can decode (MP4, MOV, MKV, WebM, AVI or MPEG-TS): Invalid "
                                 "data found when processing input"),
    (b"", "the file is empty"),
])
def test_cli_refuses_what_is_not_a_clip_in_one_line(web_library, tmp_path, capsys, content, message):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    assert main(["search", "--clip", str(path), "--store", str(web_library.store)]) == 2
    err = capsys.readouterr().err
    assert err == f"vidsearch search: error: --clip {path}: {message}\n", err


def test_cli_refuses_an_oversized_clip_before_reading_it(web_library, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vidsearch.video.clips.MAX_CLIP_BYTES", 10)
    path = tmp_path / "big.mp4"
    path.write_bytes(b"\0" * 11)
    assert main(["search", "--clip", str(path), "--store", str(web_library.store)]) == 2
    assert capsys.readouterr().err == f"vidsearch search: error: --clip {path}: the clip is 11 bytes: the limit is 10\n"


def test_cli_refuses_a_missing_clip(web_library, tmp_path, capsys):
    assert main(["search", "--clip", str(tmp_path / "none.mp4"), "--store", str(web_library.store)]) == 2
    assert capsys.readouterr().err.endswith(f"--clip {tmp_path / 'none.mp4'}: No such file or directory\n")


@pytest.mark.parametrize("argv", [
    ["a dog", "--clip", "x.mp4"],
    ["--image", "x.png", "--clip", "x.mp4"],
    ["a dog", "--image", "x.png", "--clip", "x.mp4"],
    [],
])
def test_cli_needs_exactly_one_of_a_sentence_an_image_or_a_clip(web_library, capsys, argv):
    assert main(["search", *argv, "--store", str(web_library.store)]) == 2
    assert capsys.readouterr().err == ("vidsearch search: error: give a query sentence, --image PATH or --clip PATH "
                                       "(one of them)\n")


def test_search_help_describes_clip_queries(capsys):
    from vidsearch.video.clips import MAX_CLIP_BYTES, MAX_CLIP_SECONDS

    assert (MAX_CLIP_BYTES, MAX_CLIP_SECONDS) == (50 * 2**20, 120.0), "the help text says these limits"
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--clip PATH search by an example video clip instead of a sentence" in text
    assert "at most 50 MB and 120 s" in text


# --- direction: the shipped model, a library of red circles moving left and right -----------------------------------

DEMO_FRAMES = FrameConfig(frames=8, size=48)  # the demo's keyframe settings (vidsearch.demo)


def shape_clip(path, rng, *, colour, shape, motion):
    """A clip of a `colour` `shape` moving in direction `motion` (8 s at 4 fps, 96 px), the rest random."""
    import dataclasses

    from vidsearch.data.synthetic import random_spec, render_clip
    from vidsearch.video.encode import write_video

    spec = random_spec(rng)
    while spec.motion != motion:
        spec = random_spec(rng)
    frames = render_clip(dataclasses.replace(spec, colour=colour, shape=shape), frames=32, size=96)
    return write_video(path, frames, fps=4, options={"preset": "ultrafast"})


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    """Five red circles moving left, five moving right, and six other shapes, indexed by the shipped ONNX model."""
    from vidsearch.demo import SHIPPED_EXPORTED
    from vidsearch.video.cache import build_cache

    root = tmp_path_factory.mktemp("circles")
    rng = np.random.default_rng(0)
    kinds = {f"red-circle-{motion}-{i}": ("red", "circle", motion) for i in range(5) for motion in ("left", "right")}
    kinds.update({f"other-{i}": kind for i, kind in enumerate([
        ("blue", "square", "left"), ("green", "triangle", "right"), ("red", "square", "left"),
        ("blue", "circle", "right"), ("red", "circle", "up"), ("orange", "diamond", "left")])})
    (root / "videos").mkdir()
    for name, (colour, shape, motion) in kinds.items():
        shape_clip(root / "videos" / f"{name}.mp4", rng, colour=colour, shape=shape, motion=motion)
    build_cache([root / "videos"], root / "cache", DEMO_FRAMES, workers=1)
    source = ModelSource(exported=str(SHIPPED_EXPORTED))
    index_cache(model=source.load(), source=source, cache_dir=root / "cache", store_dir=root / "store")
    return root, kinds


@pytest.mark.parametrize("motion, opposite", [("left", "right"), ("right", "left")])
def test_a_clip_of_a_red_circle_ranks_circles_moving_its_way_above_the_others(circles, tmp_path, capsys, motion,
                                                                              opposite):
    """Measured with 20 such queries on a library of 8 + 8 circles and 8 other shapes (the shipped model of recipe
    stage 11): 97% of (same way, other way) pairs in the right order, the worst query 89%, the best circle its way
    above the best the other way in all 20, mean ranks 3.7 and 11.3 of 24."""
    root, kinds = circles
    query = shape_clip(tmp_path / f"query-{motion}.mp4", np.random.default_rng(1), colour="red", shape="circle",
                       motion=motion)
    assert main(["search", "--clip", str(query), "--store", str(root / "store"), "-k", str(len(kinds)),
                 "--json"]) == 0
    order = [hit["video_id"] for hit in json.loads(capsys.readouterr().out)["hits"]]
    assert sorted(order) == sorted(kinds)
    same = [order.index(name) for name in kinds if kinds[name] == ("red", "circle", motion)]
    other = [order.index(name) for name in kinds if kinds[name] == ("red", "circle", opposite)]
    ordered = np.mean([a < b for a in same for b in other])
    assert ordered >= 0.8 and min(same) == 0, \
        f"{motion}: circles going {motion} at ranks {same}, going {opposite} at {other} ({ordered:.0%} of pairs ordered)"
