"""The size limit holds for every decoded frame, not only for the declared size and the first frame."""

import json
import struct
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from vidsearch.video import samplers
from vidsearch.video.decode import DecodeLimits, VideoError, decode_frames, iter_frames, probe

LIMITS = DecodeLimits()

# Run in a child so that its peak memory is its own: probe, uniform keyframes and their decoding, as the cache does.
EXTRACT_AND_MEASURE = """
import json, resource, sys
from vidsearch.video import samplers
from vidsearch.video.decode import DecodeLimits, VideoError, decode_frames, probe
limits = DecodeLimits()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    info = probe(sys.argv[1], limits=limits)
    chosen = samplers.uniform(info.timestamps, num_frames=12, fps=1.0).tolist()
    decode_frames(sys.argv[1], info=info, indices=chosen, size=224, limits=limits)
    code = "ok"
except VideoError as error:
    code = error.code
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"code": code, "grown_mb": grown}))
"""


def jpeg(width: int, height: int, *, value: int = 90) -> bytes:
    """One flat baseline JPEG picture, as an MJPEG packet."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = width, height, "yuvj420p", Fraction(1, 10)
    picture = av.VideoFrame.from_ndarray(np.full((height, width, 3), value, np.uint8), format="rgb24")
    return bytes(encoder.encode(picture.reformat(format="yuvj420p"))[0])


def mjpeg_avi(path, pictures: list[bytes]):
    """An MJPEG AVI of these JPEG pictures at 10 fps; its headers declare the first picture's size (64×64)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for i, data in enumerate(pictures):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            container.mux(packet)
    return path


def claiming_side(picture: bytes, side: int) -> bytes:
    """The picture with its JPEG header (SOF0) saying side×side, padded to the size FFmpeg expects of such a frame
    (it refuses a header that claims more than 4 blocks of 8×8 pixels per byte): a 16 000² frame, 1.1 MB."""
    patched = bytearray(picture)
    at = patched.index(b"\xff\xc0")
    patched[at + 5:at + 9] = struct.pack(">HH", side, side)
    return bytes(patched) + bytes((side // 8) ** 2 // 4 + 100_000)


def test_a_huge_frame_after_a_small_first_one_is_refused_before_it_is_allocated(tmp_path):
    """A 64×64 first second (and header), then a frame of 16 000×16 000 pixels: 384 MB once decoded."""
    small = jpeg(64, 64)
    growing = mjpeg_avi(tmp_path / "growing.avi", [small] * 10 + [claiming_side(small, 16000)])
    assert probe(growing, limits=LIMITS).width == 64  # the declared size and the first frame pass
    result = subprocess.run([sys.executable, "-c", EXTRACT_AND_MEASURE, str(growing)], capture_output=True,
                            text=True, check=True)
    outcome = json.loads(result.stdout)
    assert outcome["code"] == "bad_dimensions" and outcome["grown_mb"] < 100, (outcome, result.stderr[-2000:])


def test_a_frame_wider_than_the_limit_is_refused_before_conversion(tmp_path):
    """9 000×16 is few pixels (the decoder's pixel budget allows it) but wider than the 8 192 px limit."""
    path = mjpeg_avi(tmp_path / "wide.avi", [jpeg(64, 64)] * 5 + [jpeg(9000, 16)] * 10)
    info = probe(path, limits=LIMITS)
    chosen = samplers.uniform(info.timestamps, num_frames=12, fps=1.0).tolist()
    assert chosen == [0, 10]
    with pytest.raises(VideoError, match=r"bad_dimensions: a frame at 1\.000 s is 9000×16 \(limit 8192\)"):
        decode_frames(path, info=info, indices=chosen, size=32, limits=LIMITS)
    with pytest.raises(VideoError, match=r"bad_dimensions: a frame at 0\.500 s is 9000×16"):
        list(iter_frames(path, limits=LIMITS))
