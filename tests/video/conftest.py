"""Test videos, made once per session: every frame carries its own index, painted as a 4×4 block code.

The code is a Gray code (consecutive frames differ in one block, so the code itself adds little frame difference),
drawn in the middle half of the centre square, so it survives compression, scaling, centre cropping and rotation,
and reads back from any square keyframe. Frames are 64×48 on a flat background whose brightness can change at
chosen frames, which is how the maxdiff and shot tests plant their large differences.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidsearch.video.encode import write_video

WIDTH, HEIGHT = 64, 48
CELLS = 4


def gray(index: int) -> int:
    return index ^ (index >> 1)


def from_gray(code: int) -> int:
    index = 0
    while code:
        index ^= code
        code >>= 1
    return index


def paint(index: int, *, background: int = 100, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A frame showing `index`: bit k of its Gray code is cell (k // 4, k % 4) of the code grid, white or black."""
    frame = np.full((height, width, 3), background, dtype=np.uint8)
    side = min(width, height)
    top, left, cell = (height - side) // 2 + side // 4, (width - side) // 2 + side // 4, side // (2 * CELLS)
    code = gray(index)
    for bit in range(CELLS * CELLS):
        row, col = divmod(bit, CELLS)
        frame[top + row * cell:top + (row + 1) * cell, left + col * cell:left + (col + 1) * cell] = \
            255 if code >> bit & 1 else 0
    return frame


def read_index(square: np.ndarray) -> int:
    """The frame index painted into a square keyframe [S, S, 3] (any S, after scaling and centre cropping)."""
    side = square.shape[0]
    cell = side / (2 * CELLS)
    code = 0
    for bit in range(CELLS * CELLS):
        row, col = divmod(bit, CELLS)
        y, x = int(side / 4 + (row + 0.5) * cell), int(side / 4 + (col + 0.5) * cell)
        patch = square[y - int(cell / 4):y + int(cell / 4) + 1, x - int(cell / 4):x + int(cell / 4) + 1]
        code |= int(patch.mean() > 128) << bit
    return from_gray(code)


def encode(path: Path, frames: list[np.ndarray], *, times: list[float] | None = None, fps: float = 10,
           codec: str = "libx264", pix_fmt: str = "yuv420p", container_options: dict | None = None) -> Path:
    """Like write_video, but with explicit timestamps (variable frame rate) and muxer options."""
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = round((times[i] if times else i / fps) * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def rotate_mp4(source: Path, target: Path) -> Path:
    """Copy an MP4 with its track matrix set to 'rotate 90° clockwise for display', as phones record portrait."""
    data = bytearray(source.read_bytes())
    identity = struct.pack(">9i", 1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    at = data.index(identity, data.index(b"tkhd"))
    data[at:at + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    target.write_bytes(bytes(data))
    return target


def huge_avi(target: Path, side: int) -> Path:
    """An uncompressed AVI whose headers declare side×side frames (raw video has no size of its own in the data)."""
    write_video(target, [paint(i) for i in range(5)], fps=10, codec="rawvideo", pix_fmt="bgr24")
    data = bytearray(target.read_bytes())
    avih = data.index(b"avih") + 8
    data[avih + 32:avih + 40] = struct.pack("<2I", side, side)
    strf = data.index(b"strf") + 8
    data[strf + 4:strf + 12] = struct.pack("<2i", side, side)
    target.write_bytes(bytes(data))
    return target


def audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=44100)
        for k in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


OPEN_GOP = {"g": "10", "x264-params": "open-gop=1:scenecut=0"}  # an intra frame every second, B-frames across
VFR_TIMES = [0.0, 0.1, 0.15, 0.9, 1.0, 1.02, 1.5, 2.3, 2.31, 3.7, 3.75, 3.9]
SHOT_STARTS = (0, 60, 125, 155)  # frames (5 fps) where the background changes: 0, 12, 25 and 31 s
MAXDIFF_JUMPS = (5, 11, 17, 26)


def _shots_frames() -> list[np.ndarray]:
    backgrounds = {0: 40, 60: 200, 125: 90, 155: 230}
    frames, background = [], 40
    for i in range(200):
        background = backgrounds.get(i, background)
        frames.append(paint(i, background=background))
    return frames


def _jump_frames() -> list[np.ndarray]:
    """30 frames whose background flips between dark and bright exactly at MAXDIFF_JUMPS."""
    background, frames = 60, []
    for i in range(30):
        if i in MAXDIFF_JUMPS:
            background = 200 if background == 60 else 60
        frames.append(paint(i, background=background))
    return frames


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    counted = [paint(i) for i in range(35)]  # 3.5 s at 10 fps
    made = {
        "h264": write_video(root / "h264.mp4", counted, fps=10),
        "vp9": write_video(root / "vp9.webm", counted[:25], fps=10, codec="libvpx-vp9"),
        "mjpeg": write_video(root / "mjpeg.avi", counted[:25], fps=10, codec="mjpeg", pix_fmt="yuvj420p"),
        "vfr": encode(root / "vfr.mp4", [paint(i) for i in range(len(VFR_TIMES))], times=VFR_TIMES),
        "one": write_video(root / "one.mp4", counted[:1], fps=10),
        "shots": write_video(root / "shots.mp4", _shots_frames(), fps=5),
        "jumps": write_video(root / "jumps.mp4", _jump_frames(), fps=10),
        "faststart": encode(root / "faststart.mp4", counted, container_options={"movflags": "faststart"}),
        "open_gop": write_video(root / "open_gop.mp4", counted, fps=10, options=OPEN_GOP),
        "gop7": write_video(root / "gop7.mp4", counted, fps=10, options={"g": "7", "x264-params": "scenecut=0"}),
    }
    landscape = [np.ascontiguousarray(np.rot90(paint(i, width=HEIGHT, height=WIDTH), k=1)) for i in range(25)]
    made["rotated"] = rotate_mp4(write_video(root / "coded.mp4", landscape, fps=10), root / "rotated.mp4")
    return made


@pytest.fixture(scope="session")
def bad_videos(videos, tmp_path_factory) -> dict[str, Path]:
    """Inputs that must each end as a failed entry with its error code (file name → path; codes in test_corrupt.py)."""
    root = tmp_path_factory.mktemp("bad")
    good = videos["faststart"].read_bytes()
    (root / "zero.mp4").write_bytes(b"")
    for percent in (30, 60, 90, 99):
        (root / f"truncated{percent}.mp4").write_bytes(good[:len(good) * percent // 100])
    (root / "moov_missing.mp4").write_bytes(videos["h264"].read_bytes()[:-2000])
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    (root / "target").mkdir()  # what the playlists point at, by a relative path as FFmpeg's safe mode allows
    (root / "target" / "clip.mp4").write_bytes(videos["h264"].read_bytes())
    (root / "concat.avi").write_text("ffconcat version 1.0\nfile 'target/clip.mp4'\n")
    (root / "playlist.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:3.5,\ntarget/clip.mp4\n"
                                        "#EXT-X-ENDLIST\n")
    (root / "playlist.mp4").write_text((root / "playlist.m3u8").read_text())
    audio_only(root / "audio.mp4")
    huge_avi(root / "huge.avi", 16000)  # FFmpeg would allocate 384 MB a frame: refused by our limit
    huge_avi(root / "absurd.avi", 60000)  # beyond what FFmpeg accepts: it reports no size at all
    return {path.name: path for path in sorted(root.iterdir()) if path.is_file()}


@pytest.fixture(scope="session")
def painted_index():
    """read_index, for the tests (conftest modules cannot be imported under --import-mode=importlib)."""
    return read_index
