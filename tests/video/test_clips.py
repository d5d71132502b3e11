"""Query clips: a real video's keyframes, sampled and stored as the keyframe cache's, decoded in a child process;
files that are not clips, too long or too large refused in one line; nothing left behind."""

import io
import os
import re
import signal
import stat
from dataclasses import replace

import numpy as np
import pytest

from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import random_spec, render_clip
from vidsearch.video import clips
from vidsearch.video.cache import build_cache, open_cache
from vidsearch.video.clips import ClipLimits, ClipRejected, decode_clip, query_frame_config, read_clip
from vidsearch.video.encode import write_video

CONFIG = FrameConfig(frames=4, size=48)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """A moving shape, 17 frames at 4 fps (4.25 s), as H.264 MP4."""
    frames = render_clip(random_spec(np.random.default_rng(7)), frames=17, size=64)
    return write_video(tmp_path_factory.mktemp("clip") / "shape.mp4", frames, fps=4)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Where decode_clip makes its temporary directories, to see what it leaves."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(root))
    return root


def test_a_clip_gives_the_keyframes_the_cache_stores_for_it(clip_file, tmp_path, private_tmp):
    build_cache([clip_file], tmp_path / "cache", CONFIG, workers=1)
    cache = open_cache(tmp_path / "cache")
    entry = cache.entry("shape")
    decoded = decode_clip(clip_file, CONFIG)
    assert decoded.timestamps == entry.timestamps == [0.0, 1.0, 3.0, 4.0]
    assert decoded.duration == pytest.approx(entry.duration) == 4.25
    assert decoded.frames.dtype == np.uint8 and decoded.frames.shape == (4, 48, 48, 3)
    np.testing.assert_array_equal(decoded.frames, cache.read_frames("shape"))
    assert list(private_tmp.iterdir()) == [], "the temporary directory was left behind"


def test_bytes_a_path_and_an_open_file_decode_alike(clip_file):
    data = clip_file.read_bytes()
    by_path = decode_clip(clip_file, CONFIG).frames
    np.testing.assert_array_equal(decode_clip(data, CONFIG).frames, by_path)
    np.testing.assert_array_equal(decode_clip(io.BytesIO(data), CONFIG).frames, by_path)


def test_the_librarys_sampler_settings_apply(clip_file):
    every_half_second = replace(CONFIG, fps=2.0, frames=20)
    assert decode_clip(clip_file, every_half_second).timestamps == [0.5 * i for i in range(9)]
    assert decode_clip(clip_file, replace(CONFIG, frames=2)).timestamps == [0.0, 4.0]


def test_the_frame_config_is_the_librarys_for_one_moment(tmp_path, clip_file):
    build_cache([clip_file], tmp_path / "cache", replace(CONFIG, segment_seconds=2.0, fps=2.0), workers=1)
    model = type("Model", (), {"num_frames": 8, "image_size": 32})()
    from vidsearch.runtime.exported import ExportedModel

    assert query_frame_config(model, tmp_path / "cache") == replace(CONFIG, fps=2.0)
    exported = ExportedModel.__new__(ExportedModel)  # only what the fallback reads
    exported.num_frames, exported.image_size = 8, 32
    assert query_frame_config(exported, tmp_path / "missing") == FrameConfig(frames=8, size=32)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert query_frame_config(exported, tmp_path / "broken") == FrameConfig(frames=8, size=32)
    assert query_frame_config(exported, None) == FrameConfig(frames=8, size=32)


def test_a_text_file_named_mp4_is_refused(tmp_path, private_tmp):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(ClipRejected) as refused:
        decode_clip(path, CONFIG)
    assert str(refused.value) == ("not a video vidsearch can decode (MP4, MOV, MKV, WebM, AVI or MPEG-TS): Invalid "
                                  "data found when processing input")
    assert list(private_tmp.iterdir()) == []


def test_a_clip_over_the_duration_limit_is_refused(clip_file):
    with pytest.raises(ClipRejected, match=r"^the clip is too long: 4 s \(limit 2 s\)$"):
        decode_clip(clip_file, CONFIG, limits=ClipLimits(max_seconds=2.0))


def test_a_clip_over_the_size_limit_is_refused_before_decoding(clip_file, monkeypatch, private_tmp):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the clip was decoded")

    monkeypatch.setattr(clips, "run_isolated", no_decoding)
    size = clip_file.stat().st_size
    limits = ClipLimits(max_bytes=size - 1)
    for source, told in [(clip_file, f"{size} bytes"), (clip_file.read_bytes(), f"{size} bytes"),
                         (io.BytesIO(clip_file.read_bytes()), f"over {size - 1} bytes")]:
        with pytest.raises(ClipRejected) as refused:
            decode_clip(source, CONFIG, limits=limits)
        assert str(refused.value) == f"the clip is {told}: the limit is {size - 1}"
    with pytest.raises(ClipRejected, match=f"^the clip is {size} bytes: the limit is {size - 1}$"):
        read_clip(clip_file, max_bytes=size - 1)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("name, message", [
    ("missing.mp4", "No such file or directory"),
    ("folder", "Is a directory"),
    ("empty.mp4", "the file is empty"),
])
def test_what_is_not_a_clip_file_is_refused_in_one_line(tmp_path, name, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.mp4").write_bytes(b"")
    path = tmp_path / name
    for read in (read_clip, lambda source: decode_clip(source, CONFIG)):
        with pytest.raises(ClipRejected) as refused:
            read(path)
        assert str(refused.value) == message


def test_a_fifo_does_not_hang_the_reader(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("reading the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(ClipRejected, match="^not a regular file$"):
            read_clip(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_decoder_past_its_time_limit_is_killed(clip_file, private_tmp):
    with pytest.raises(ClipRejected, match=r"^decoding the clip took longer than 0\.001 s$"):
        decode_clip(clip_file, CONFIG, limits=ClipLimits(timeout_s=0.001))  # the child cannot even start in time
    assert list(private_tmp.iterdir()) == []


def test_the_clip_and_its_keyframes_are_private(clip_file, monkeypatch):
    seen = {}
    real = clips.run_isolated

    def spying(fn, tasks, **kwargs):
        tasks = list(tasks)
        directory = tasks[0]["dir"]
        seen["dir"] = stat.S_IMODE(os.stat(directory).st_mode)
        seen["file"] = stat.S_IMODE(os.stat(os.path.join(directory, clips.CLIP_FILE)).st_mode)
        seen["names"] = sorted(os.listdir(directory))
        return real(fn, tasks, **kwargs)

    real_load = clips._load_frames

    def loading(path, *args, **kwargs):
        seen["frames"] = stat.S_IMODE(os.stat(path).st_mode)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(clips, "run_isolated", spying)
    monkeypatch.setattr(clips, "_load_frames", loading)
    decode_clip(clip_file.read_bytes(), CONFIG)
    assert seen == {"dir": 0o700, "file": 0o600, "names": [clips.CLIP_FILE], "frames": 0o600}, seen


@pytest.mark.parametrize("array, count, why", [
    (np.zeros((2, 48, 48, 3), np.float32), 2, "float32"),
    (np.zeros((2, 48, 40, 3), np.uint8), 2, "(2, 48, 40, 3)"),
    (np.zeros((3, 48, 48, 3), np.uint8), 2, "(3, 48, 48, 3)"),
    (np.zeros((5, 48, 48, 3), np.uint8), 5, "(5, 48, 48, 3)"),  # more keyframes than the settings allow
])
def test_the_childs_keyframes_are_checked_before_use(tmp_path, array, count, why):
    path = tmp_path / "frames.npy"
    np.save(path, array)
    with pytest.raises(ClipRejected, match=rf"^the decoder returned .*{re.escape(why)}"):
        clips._load_frames(path, CONFIG, count=count)


class _Opens:
    """Unpickled, this creates the file `path`: evidence that something was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickled_array_from_the_child_is_not_unpickled(tmp_path):
    path, marker = tmp_path / "frames.npy", tmp_path / "unpickled"
    np.save(path, np.array([_Opens(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ClipRejected, match="^the decoder's keyframes cannot be read: "):
        clips._load_frames(path, CONFIG, count=1)
    assert not marker.exists()


def test_an_image_query_becomes_nearly_the_keyframe_a_video_of_that_picture_gives(tmp_path):
    """A still shown as the one frame of a lossless H.264 video (its YUV 4:2:0 planes kept exactly, checked): the
    video's keyframe and `still_as_keyframe` of the still agree in luma (rounding only) and differ in colour only at
    colour edges (swscale places a decoded frame's chroma samples by metadata PyAV cannot set on a new frame); the
    plain Pillow resize image queries used before is ten times further off."""
    from vidsearch.runtime.exported import resize_crop
    from vidsearch.video.decode import DecodeLimits, decode_frames, probe, still_as_keyframe

    still = render_clip(random_spec(np.random.default_rng(11)), frames=2, size=96)[0]
    still = np.ascontiguousarray(np.concatenate([still, still[:, :40]], axis=1))  # 96 × 136: the crop matters too
    video = write_video(tmp_path / "still.mp4", [still], fps=1, options={"qp": "0"})
    import av

    with av.open(str(video)) as container:
        planes = next(container.decode(video=0)).to_ndarray()
    np.testing.assert_array_equal(planes, av.VideoFrame.from_ndarray(still, format="rgb24")
                                  .reformat(format="yuv420p").to_ndarray())
    keyframe = decode_frames(video, info=probe(video, limits=DecodeLimits()), indices=[0], size=48,
                             limits=DecodeLimits())[0].astype(float)
    made, pillow = still_as_keyframe(still, 48).astype(float), resize_crop(still, 48).astype(float)
    assert made.shape == keyframe.shape == (48, 48, 3)

    def luma(rgb):
        return rgb @ np.array([0.299, 0.587, 0.114])

    ours, theirs = np.abs(made - keyframe), np.abs(pillow - keyframe)
    assert np.abs(luma(made) - luma(keyframe)).max() <= 1.5, np.abs(luma(made) - luma(keyframe)).max()
    assert ours.mean() * 10 < theirs.mean(), (ours.mean(), theirs.mean())
    config = FrameConfig(frames=1, size=48, jpeg_quality=75)
    np.testing.assert_array_equal(clips.still_as_stored(still, config),
                                  clips._as_stored(still_as_keyframe(still, 48), 75))


def test_an_image_far_longer_than_wide_is_cut_to_its_middle_before_scaling():
    """A 1 × 4 M pixel image (within the 40 M pixel limit) would be scaled to 224 × 896 M pixels before its centre
    crop; it is cut to its middle at 4 : 1 first. Within 4 : 1 nothing is cut, so nothing changes."""
    from vidsearch.runtime.exported import resize_crop
    from vidsearch.video.decode import MAX_ASPECT, central, still_as_keyframe

    wide = np.zeros((1, 4_000_000, 3), np.uint8)
    wide[0, 2_000_000 - 2:2_000_000 + 2] = 255  # the middle 4 pixels: the crop's whole width
    middle = central(wide)
    assert middle.shape == (1, MAX_ASPECT, 3) and middle.min() == 255
    tall = np.zeros((4_000_001, 2, 3), np.uint8)
    assert central(tall).shape == (8, 2, 3)
    assert still_as_keyframe(wide, 224).shape == resize_crop(wide, 224).shape == (224, 224, 3)
    for shape in [(48, 192, 3), (192, 48, 3), (61, 97, 3)]:
        image = np.zeros(shape, np.uint8)
        assert central(image) is image
