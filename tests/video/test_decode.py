"""Decoding and sampling real files: every keyframe's painted index and timestamp is checked exactly."""

import os

import av
import av.logging
import numpy as np
import pytest

from vidsearch.video import decode, samplers
from vidsearch.video.decode import (DecodeLimits, VideoError, _decode_only, check_local_file, decode_frames,
                                    iter_frames, open_video, probe)

LIMITS = DecodeLimits()


def uniform_keyframes(path, read_index, *, num_frames=12, size=64):
    info = probe(path, limits=LIMITS)
    chosen = samplers.uniform(info.timestamps, num_frames=num_frames, fps=1.0)
    frames = decode_frames(path, info=info, indices=chosen.tolist(), size=size, limits=LIMITS)
    return info, chosen, [read_index(frame) for frame in frames]


@pytest.mark.parametrize("name, expected", [("h264", [0, 10, 20, 30]), ("vp9", [0, 10, 20]), ("mjpeg", [0, 10, 20])])
def test_uniform_keeps_the_first_frame_of_every_second(videos, painted_index, name, expected):
    info, chosen, painted = uniform_keyframes(videos[name], painted_index)
    assert chosen.tolist() == painted == expected
    assert info.timestamps[chosen].tolist() == pytest.approx([i / 10 for i in expected])
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)


def test_more_seconds_than_frames_are_thinned_evenly(videos, painted_index):
    _, chosen, painted = uniform_keyframes(videos["h264"], painted_index, num_frames=3)
    assert chosen.tolist() == painted == [0, 20, 30]


def test_variable_frame_rate_uses_real_timestamps(videos, painted_index):
    info, chosen, painted = uniform_keyframes(videos["vfr"], painted_index)
    assert chosen.tolist() == painted == [0, 4, 7, 9]
    assert info.timestamps.tolist() == pytest.approx([0.0, 0.1, 0.15, 0.9, 1.0, 1.02, 1.5, 2.3, 2.31, 3.7, 3.75, 3.9])


def test_rotated_video_comes_out_upright(videos, painted_index):
    info, chosen, painted = uniform_keyframes(videos["rotated"], painted_index)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    assert painted == [0, 10, 20]


def turned(path, degrees, painted):
    """A 64×48 H.264 file whose stream's display matrix turns it `degrees` counter-clockwise."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in painted:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def first_frame_rotation(path):
    """What the previous probe read: the first decoded frame's rotation, in quarter turns counter-clockwise."""
    with av.open(str(path)) as container:
        return round(next(container.decode(video=0)).rotation / 90) % 4 * 90


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_rotation_is_read_without_decoding_and_equals_the_decoded_frames(tmp_path, monkeypatch, videos, suffix):
    """probe takes the rotation from the stream's display matrix, decoding nothing, and finds what the decoder
    attaches to the frames: for every quarter turn, a file without a matrix, and the phone-style track matrix."""
    def no_decoding(*args):
        raise AssertionError("probe decoded a frame for the rotation")

    monkeypatch.setattr(decode, "_first_rotation", no_decoding)
    painted = [np.full((48, 64, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    paths = [turned(tmp_path / f"turned{degrees}.{suffix}", degrees, painted) for degrees in (0, 90, 180, 270)]
    paths += [videos["rotated"], videos["vp9"], videos["mjpeg"]]
    read = [probe(path, limits=LIMITS).rotation for path in paths]
    assert read == [first_frame_rotation(path) for path in paths], [path.name for path in paths]
    assert read[-3:] == [270, 0, 0]
    if suffix == "mp4":
        assert read[:4] == [0, 90, 180, 270]


def test_rotation_is_the_video_streams_own_when_it_is_not_the_first(tmp_path):
    """An audio stream first, the video stream second: the video's matrix counts, not the first stream listed."""
    path = tmp_path / "audio_first.mp4"
    with av.open(str(path), mode="w") as container:
        audio = container.add_stream("aac", rate=8000)
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.set_display_rotation(90)
        for i in range(10):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 8000, i * 1024
            container.mux(audio.encode(sound))
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * i, np.uint8),
                                                                  format="rgb24")))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    with av.open(str(path)) as container:
        assert [stream.type for stream in container.streams] == ["audio", "video"]
    assert probe(path, limits=LIMITS).rotation == first_frame_rotation(path) == 90


def test_rotation_falls_back_to_decoding_when_the_matrix_cannot_be_read(videos, monkeypatch):
    monkeypatch.setattr(decode, "_display_rotation", lambda container, index: None)
    info = probe(videos["rotated"], limits=LIMITS)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)


class _Described:
    """A container whose FFmpeg description is given text."""

    def __init__(self, text: str):
        self.text = text

    def dumps_format(self) -> str:
        return self.text


@pytest.mark.parametrize("side_data, expected", [
    ("      displaymatrix: rotation of -90.00 degrees", 270),  # FFmpeg 7's words (clockwise: 270 counter-)
    ("      Display Matrix: rotation of 180.00 degrees", 180),  # older FFmpeg's
    ("      display matrix: turned by -90 degrees", None),      # words it does not know: decode the first frame
    ("      spherical: equirectangular", 0),                    # other side data: upright
])
def test_the_display_matrix_is_read_from_the_streams_description_or_left_to_decoding(side_data, expected):
    text = ("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':\n"
            "  Stream #0:0[0x1](und): Audio: aac, 8000 Hz, mono\n"
            "      Side data:\n      displaymatrix: rotation of 90.00 degrees\n"
            "  Stream #0:1[0x2](und): Video: h264, yuv420p, 64x48\n"
            f"      Side data:\n{side_data}\n")
    assert decode._display_rotation(_Described(text), 1) == expected
    assert decode._display_rotation(_Described(text), 0) == 90  # the audio stream's own line, not the video's


@pytest.mark.parametrize("level, skip_repeated", [(None, True), (av.logging.WARNING, False)])
def test_reading_the_rotation_leaves_pyav_logging_as_it_was(videos, level, skip_repeated):
    before = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(level)
    av.logging.set_skip_repeated(skip_repeated)
    try:
        assert probe(videos["rotated"], limits=LIMITS).rotation == 270
        assert (av.logging.get_level(), av.logging.get_skip_repeated()) == (level, skip_repeated)
    finally:
        av.logging.set_level(before[0])
        av.logging.set_skip_repeated(before[1])


def test_opening_decodes_nothing(videos):
    """FFmpeg reads the stream info with every frame skipped: the decoder's pixel format is not yet known."""
    with open_video(videos["h264"], limits=LIMITS) as container:
        context = container.streams.video[0].codec_context
        assert (context.width, context.height, context.pix_fmt) == (64, 48, None)


def test_a_file_whose_size_only_decoding_tells_is_opened_again_with_decoding(videos, monkeypatch, painted_index):
    """The allowed containers and FFmpeg's parsers declare the size of every test file; a file where neither does
    (here: any file that opened without decoding, as far as the check knows) is opened again, this time letting FFmpeg
    decode its first frames for the size."""
    monkeypatch.setattr(decode, "_needs_probe_decoding", _opened_without_decoding)
    with open_video(videos["h264"], limits=LIMITS) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    info, chosen, painted = uniform_keyframes(videos["h264"], painted_index)
    assert (info.width, info.height) == (64, 48) and painted == chosen.tolist() == [0, 10, 20, 30]


def _opened_without_decoding(container):
    return container.streams.video[0].codec_context.pix_fmt is None


def test_one_frame_video(videos, painted_index):
    info, chosen, painted = uniform_keyframes(videos["one"], painted_index)
    assert painted == [0] and info.timestamps.tolist() == [0.0]
    assert info.duration == pytest.approx(0.1)


def test_one_scaler_per_file_gives_each_frame_its_own_conversion(videos):
    """A scaler shared by frames of different sizes (64×48 and 48×64, alternating) converts each as a scaler of its
    own does: bicubic to a short side of 32, turned upright by each quarter turn, centre square."""
    with av.open(str(videos["h264"])) as container:
        frames = [frame if k % 2 else frame.reformat(width=48, height=64)
                  for k, frame in enumerate(container.decode(video=0))]
    scaler = decode.VideoReformatter()
    for k, frame in enumerate(frames):
        rotation = k % 4 * 90
        width, height = (43, 32) if frame.width > frame.height else (32, 43)
        own = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
        expected = np.rot90(own, k=rotation // 90)
        top, left = (expected.shape[0] - 32) // 2, (expected.shape[1] - 32) // 2
        np.testing.assert_array_equal(decode._square(frame, size=32, rotation=rotation, scaler=scaler),
                                      expected[top:top + 32, left:left + 32], err_msg=f"frame {k}")


def test_skipped_frames_do_not_change_the_kept_ones(videos, painted_index):
    """Frames decoded with their neighbours skipped equal the same frames from a decode of every frame."""
    info = probe(videos["h264"], limits=LIMITS)
    everything = decode_frames(videos["h264"], info=info, indices=list(range(35)), size=48, limits=LIMITS)
    some = decode_frames(videos["h264"], info=info, indices=[3, 17, 34], size=48, limits=LIMITS)
    np.testing.assert_array_equal(some, everything[[3, 17, 34]])
    assert [painted_index(frame) for frame in everything] == list(range(35))


def test_skipped_groups_of_pictures_do_not_change_the_kept_ones(videos):
    """Groups of pictures no wanted frame needs are not decoded, and open groups (whose first frames refer back to
    the previous group) still give the frames of a decode of every frame, alone or with others."""
    path = videos["open_gop"]
    info = probe(path, limits=LIMITS)
    assert np.flatnonzero(info.keyframes).tolist() == [0, 10, 20, 30]
    everything = decode_frames(path, info=info, indices=list(range(35)), size=48, limits=LIMITS)
    subsets = [[i] for i in range(35)] + [[1, 20, 30], [2, 29, 32], [9, 10, 30], [2, 20, 21], [0, 34]]
    for indices in subsets:
        some = decode_frames(path, info=info, indices=indices, size=48, limits=LIMITS)
        np.testing.assert_array_equal(some, everything[indices], err_msg=f"frames {indices}")


def test_keyframes_only_takes_intra_frames_at_their_own_time(videos, painted_index):
    """An intra frame every 0.7 s: the first of each second among them, with their own times."""
    path = videos["gop7"]
    info = probe(path, limits=LIMITS)
    assert np.flatnonzero(info.keyframes).tolist() == [0, 7, 14, 21, 28]
    candidates = np.flatnonzero(info.keyframes)
    chosen = candidates[samplers.uniform(info.timestamps[candidates], num_frames=12, fps=1.0)]
    frames = decode_frames(path, info=info, indices=chosen.tolist(), size=48, limits=LIMITS)
    assert chosen.tolist() == [painted_index(frame) for frame in frames] == [0, 14, 21]
    assert info.timestamps[chosen].tolist() == pytest.approx([0.0, 1.4, 2.1])


def skip_levels(path, info, indices) -> dict[float, str]:
    """The decoder's skip_frame level for every packet sent while decoding `indices`, by the packet's time."""
    levels = {}
    with open_video(path, limits=LIMITS) as container:
        stream = container.streams.video[0]

        def packets():
            for packet in container.demux(stream):
                yield packet
                seconds = round(float((packet.pts - info.pts[0]) * stream.time_base), 3)
                levels[seconds] = stream.codec_context.skip_frame  # as set for this packet before it was decoded
        wanted = {int(info.pts[i]): position for position, i in enumerate(indices)}
        assert len(list(_decode_only(stream, packets(), wanted, info.pts[info.keyframes], LIMITS))) == len(indices)
    return levels


def test_only_what_the_wanted_frames_need_is_decoded(videos):
    """Intra frames alone need nothing else; a frame in the middle of a group needs what comes before it in that group
    (except frames nobody refers to), nothing after it; reading stops at the last wanted frame."""
    path = videos["open_gop"]
    info = probe(path, limits=LIMITS)
    levels = skip_levels(path, info, [0, 20, 30])
    decoded = {t: level for t, level in levels.items() if level != "ALL"}
    assert decoded == {0.0: "DEFAULT", 2.0: "DEFAULT", 3.0: "DEFAULT"} and max(levels) == 3.0, levels
    levels = skip_levels(path, info, [14])
    order = list(levels)  # decoding order
    assert {levels[t] for t in order[:order.index(1.0)]} == {"ALL"}, levels
    assert (levels[1.0], levels[1.4]) == ("NONREF", "DEFAULT") and max(levels) < 2.0, levels


def test_maxdiff_finds_the_planted_changes(videos, painted_index):
    info = probe(videos["jumps"], limits=LIMITS)
    scores = samplers.maxdiff_scores(iter_frames(videos["jumps"], limits=LIMITS))
    chosen = samplers.maxdiff(scores, num_frames=4)
    frames = decode_frames(videos["jumps"], info=info, indices=chosen.tolist(), size=64, limits=LIMITS)
    assert chosen.tolist() == [painted_index(frame) for frame in frames] == [5, 11, 17, 26]


def test_limits_are_checked_before_decoding(videos):
    for limits, code in [(DecodeLimits(max_seconds=2), "too_long"), (DecodeLimits(max_side=32), "bad_dimensions"),
                         (DecodeLimits(max_streams=0), "too_many_streams")]:
        with pytest.raises(VideoError) as error:
            probe(videos["h264"], limits=limits)
        assert error.value.code == code


def test_only_regular_local_files_reach_the_decoder(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    cases = [("http://example.com/v.mp4", "not_local"), ("file:/etc/hostname", "not_local"),
             ("/dev/zero", "not_a_file"), (str(fifo), "not_a_file"), (str(tmp_path), "not_a_file"),
             (str(tmp_path / "missing.mp4"), "not_found")]
    for path, code in cases:
        with pytest.raises(VideoError) as error:
            check_local_file(path)
        assert error.value.code == code, path
