"""`vidsearch frames` over a generated corpus of ≥ 200 malformed files: it ends in bounded time and every file ends
with a status, and a failed one with a known error code (status ok is fine where the damage is harmless).

The corpus is made here, in a temporary directory, from a few small valid seed videos: truncations at many offsets,
bit flips at many positions, wrong extensions, empty and zero-filled files, garbage, huge declared dimensions and
durations, endless inputs (a FIFO, /dev/zero, looping and live playlists) and playlist tricks.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidsearch.video.cache import open_cache
from vidsearch.video.encode import write_video

VIDEO_ERRORS = {"empty", "not_found", "not_a_file", "not_local", "format_not_allowed", "unreadable", "too_many_streams",
                "no_video_stream", "unknown_codec", "bad_dimensions", "too_long", "truncated", "corrupt", "no_frames",
                "decode_error"}
CONTAINED = {"crashed"}  # a decoder that kills its child process: contained, reported, the job goes on
SEEDS = {"h264.mp4": ("libx264", "yuv420p"), "h264.mkv": ("libx264", "yuv420p"), "h264.ts": ("libx264", "yuv420p"),
         "vp9.webm": ("libvpx-vp9", "yuv420p"), "mjpeg.avi": ("mjpeg", "yuvj420p")}
RUN_LIMIT_S = 150.0


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [np.clip(rng.normal(40 + 6 * i, 20, (48, 64, 3)), 0, 255).astype(np.uint8) for i in range(count)]


def make_seeds(root: Path, *, frames: int = 20) -> dict[str, Path]:
    pictures = _frames(frames)
    return {name: write_video(root / f"seed-{name}", pictures, fps=10, codec=codec, pix_fmt=pix_fmt)
            for name, (codec, pix_fmt) in SEEDS.items()}


# --- damage ----------------------------------------------------------------------------------------------------------

def truncations(seeds: dict[str, Path], out: Path, *, cuts: int) -> None:
    """Each seed cut at `cuts` offsets: the first bytes, evenly through the file, and one byte short of the end."""
    for name, seed in seeds.items():
        data = seed.read_bytes()
        offsets = sorted({1, 8, 64, *np.linspace(100, len(data) - 1, cuts - 3).astype(int).tolist()})
        for offset in offsets:
            (out / f"cut{offset:06d}-{name}").write_bytes(data[:offset])


def bit_flips(seeds: dict[str, Path], out: Path, *, flips: int) -> None:
    """Each seed with one bit flipped: half the positions in the first 1 kB (headers), half anywhere (seeded)."""
    rng = np.random.default_rng(7)
    for name, seed in seeds.items():
        data = seed.read_bytes()
        headers = rng.integers(0, min(1024, len(data)), flips // 2)
        positions = [*headers, *rng.integers(0, len(data), flips - len(headers))]
        for k, position in enumerate(positions):
            damaged = bytearray(data)
            damaged[position] ^= 1 << int(rng.integers(0, 8))
            (out / f"flip{k:02d}-{name}").write_bytes(bytes(damaged))


def wrong_extensions(seeds: dict[str, Path], out: Path) -> None:
    suffixes = [Path(name).suffix for name in SEEDS] + [".txt", ".jpg", ""]
    for i, (name, seed) in enumerate(seeds.items()):
        for suffix in (suffixes[i + 1], ".txt", ""):
            (out / f"renamed-{Path(name).stem}-{Path(name).suffix[1:]}{suffix}").write_bytes(seed.read_bytes())


def empty_and_garbage(out: Path) -> None:
    for suffix in (".mp4", ".mkv", ".webm", ".avi", ".ts", ".mov"):
        (out / f"zero-length{suffix}").write_bytes(b"")
    (out / "zeros.mp4").write_bytes(bytes(4096))
    (out / "zeros.ts").write_bytes(bytes(188 * 40))
    rng = np.random.default_rng(3)
    for size in (10, 1000, 100_000):
        (out / f"random{size}.mkv").write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    (out / "text.avi").write_text("not a video\n" * 100)
    (out / "ftyp-only.mp4").write_bytes(struct.pack(">I4s4sI4s", 20, b"ftyp", b"isom", 512, b"isom"))
    (out / "ebml-only.mkv").write_bytes(bytes.fromhex("1a45dfa3") + b"\x01" + bytes(7))
    (out / "ts-sync-only.ts").write_bytes((b"\x47" + b"\xff" * 187) * 50)
    with av.open(str(out / "picture.mp4"), mode="w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(_frames(1)[0], format="rgb24")))


def huge_dimensions(seeds: dict[str, Path], out: Path) -> None:
    """Declared sizes the data cannot back: AVI headers, the MP4 sample entry and track header, JPEG frame headers."""
    raw = write_video(out / "raw-source.avi", _frames(4), fps=10, codec="rawvideo", pix_fmt="bgr24").read_bytes()
    (out / "raw-source.avi").unlink()
    for side in (0, 9000, 16000, 60000, 2**31 - 1):
        (out / f"avi-header-{side}.avi").write_bytes(_patch_avi_size(raw, side))
    (out / "mjpeg-header-16000.avi").write_bytes(_patch_avi_size(seeds["mjpeg.avi"].read_bytes(), 16000))
    mp4 = seeds["h264.mp4"].read_bytes()
    for side in (0, 16000, 65535):
        (out / f"mp4-sample-entry-{side}.mp4").write_bytes(_patch_mp4_sample_entry(mp4, side))
        (out / f"mp4-track-header-{side}.mp4").write_bytes(_patch_at_box(mp4, b"tkhd", 84, ">II", side << 16))
    for side in (8000, 16000, 65535):
        (out / f"jpeg-frames-{side}.avi").write_bytes(_patch_jpeg_frames(seeds["mjpeg.avi"].read_bytes(), side))


def _patch_avi_size(data: bytes, side: int) -> bytes:
    patched = bytearray(data)
    avih = patched.index(b"avih") + 8
    patched[avih + 32:avih + 40] = struct.pack("<2I", side, side)
    strf = patched.index(b"strf") + 8
    patched[strf + 4:strf + 12] = struct.pack("<2I", side, side)
    return bytes(patched)


def _patch_mp4_sample_entry(data: bytes, side: int) -> bytes:
    patched = bytearray(data)
    entry = patched.index(b"avc1", patched.index(b"stsd"))
    patched[entry + 28:entry + 32] = struct.pack(">HH", side, side)
    return bytes(patched)


def _patch_at_box(data: bytes, box: bytes, offset: int, layout: str, value: int) -> bytes:
    """Overwrite the fields at `offset` bytes from the start of the first `box` with `value` (each field)."""
    patched = bytearray(data)
    start = patched.index(box) - 4
    count = len(layout) - 1
    patched[start + offset:start + offset + struct.calcsize(layout)] = struct.pack(layout, *[value] * count)
    return bytes(patched)


def _patch_jpeg_frames(data: bytes, side: int) -> bytes:
    patched, at = bytearray(data), 0
    while (at := patched.find(b"\xff\xc0", at)) >= 0:
        patched[at + 5:at + 9] = struct.pack(">HH", side, side)
        at += 2
    return bytes(patched)


def long_and_endless(seeds: dict[str, Path], out: Path) -> None:
    """Huge declared durations, a stream repeated many times, a FIFO and devices that never end."""
    mp4 = seeds["h264.mp4"].read_bytes()
    for box in (b"mvhd", b"mdhd"):
        (out / f"duration-{box.decode()}.mp4").write_bytes(_patch_at_box(mp4, box, 24, ">I", 0xFFFFFFF0))
    (out / "duration-matroska.mkv").write_bytes(_patch_matroska_duration(seeds["h264.mkv"].read_bytes(), 1e12))
    (out / "elst-huge.mp4").write_bytes(_patch_at_box(mp4, b"elst", 16, ">I", 0xFFFFFFF0))
    raw = bytearray(seeds["mjpeg.avi"].read_bytes())
    avih = raw.index(b"avih") + 8
    raw[avih + 16:avih + 20] = struct.pack("<I", 0xFFFFFFFF)  # total frames
    (out / "avi-total-frames.avi").write_bytes(bytes(raw))
    (out / "looped.ts").write_bytes(seeds["h264.ts"].read_bytes() * 40)
    _long_declared_ts(out / "timestamps-jump.ts")
    os.mkfifo(out / "fifo.mp4")
    for device in ("/dev/zero", "/dev/urandom"):
        (out / f"device-{Path(device).name}.mp4").symlink_to(device)


def _patch_matroska_duration(data: bytes, milliseconds: float) -> bytes:
    patched = bytearray(data)
    at = patched.index(b"\x44\x89")  # Segment Info Duration, a float of 4 or 8 bytes
    width = patched[at + 2] & 0x7F
    patched[at + 3:at + 3 + width] = struct.pack(">d" if width == 8 else ">f", milliseconds)
    return bytes(patched)


def _long_declared_ts(path: Path) -> None:
    """Two frames, 5 hours apart: the stream's timestamps go on past the 4 h limit."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for picture, seconds in zip(_frames(2), (0, 5 * 3600)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = seconds * 10, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def playlists(seeds: dict[str, Path], out: Path) -> None:
    """Playlists that loop onto themselves, go live forever, or reach for files, devices and the network."""
    (out / "target").mkdir()
    (out / "target" / "clip.mp4").write_bytes(seeds["h264.mp4"].read_bytes())
    concat = "ffconcat version 1.0\nfile '{}'\n"
    for name in ("self-concat.avi", "self-concat.mkv", "self-concat.ffconcat"):
        (out / name).write_text(concat.format(name) * 3)
    (out / "concat-passwd.mp4").write_text(concat.format("/etc/passwd"))
    (out / "concat-updir.avi").write_text(concat.format("../../../../etc/hostname"))
    hls_live = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{n}\n#EXTINF:1.0,\n{target}\n"
    (out / "hls-live-self.m3u8").write_text(hls_live.format(n=0, target="hls-live-self.m3u8"))
    (out / "hls-live-self.ts").write_text(hls_live.format(n=0, target="hls-live-self.ts"))
    (out / "hls-zero.mp4").write_text(hls_live.format(n=0, target="file:///dev/zero") + "#EXT-X-ENDLIST\n")
    (out / "hls-network.mkv").write_text(hls_live.format(n=0, target="http://127.0.0.1:9/x.ts") + "#EXT-X-ENDLIST\n")
    (out / "hls-clip.webm").write_text(hls_live.format(n=0, target="target/clip.mp4") + "#EXT-X-ENDLIST\n")
    (out / "sdp-rtp.mkv").write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                                     "m=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n")
    (out / "concat:target_clip.mp4").write_bytes(b"not a protocol, a file name")
    (out / "subfile,,start,0,end,0,,:clip.mp4").write_bytes(seeds["h264.mp4"].read_bytes())


def odd_streams(seeds: dict[str, Path], out: Path) -> None:
    """Too many streams, no video stream, a video stream of a codec nobody knows."""
    mkv = seeds["h264.mkv"].read_bytes()
    (out / "codec-unknown.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_NOSUCH/CODEC!", 1))
    with av.open(str(out / "streams-20.mkv"), mode="w") as container:
        streams = [container.add_stream("mjpeg", rate=10) for _ in range(20)]
        for stream in streams:
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for stream in streams:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_frames(1)[0], format="rgb24")))
            container.mux(stream.encode(None))
    with av.open(str(out / "audio-only.mp4"), mode="w") as container:
        stream = container.add_stream("aac", rate=44100)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def build_corpus(root: Path, *, cuts: int, flips: int) -> list[Path]:
    """Every malformed input under root/corpus (the seeds themselves under root/seeds, not in the list)."""
    (root / "seeds").mkdir(parents=True)
    out = root / "corpus"
    out.mkdir()
    seeds = make_seeds(root / "seeds")
    truncations(seeds, out, cuts=cuts)
    bit_flips(seeds, out, flips=flips)
    wrong_extensions(seeds, out)
    empty_and_garbage(out)
    huge_dimensions(seeds, out)
    long_and_endless(seeds, out)
    playlists(seeds, out)
    odd_streams(seeds, out)
    return sorted(path for path in out.iterdir() if path.name != "target")


# --- the run ---------------------------------------------------------------------------------------------------------

def run_frames(inputs: list[Path], cache: Path, *, timeout_s: float) -> subprocess.CompletedProcess:
    """`vidsearch frames` over `inputs`; a run that hangs past RUN_LIMIT_S fails the test (TimeoutExpired)."""
    command = [sys.executable, "-m", "vidsearch", "frames", *map(str, inputs), "--out", str(cache), "--workers", "2",
               "--frames", "4", "--size", "32", "--timeout", str(timeout_s)]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_LIMIT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def check_manifest(cache: Path, inputs: list[Path]) -> dict[str, dict]:
    """Every input has an entry with a status; failed ones a known code and no frames; ok ones their frames."""
    entries = {Path(entry.source).name: dataclasses.asdict(entry) for entry in open_cache(cache).entries.values()}
    assert sorted(entries) == sorted(path.name for path in inputs)
    for name, entry in entries.items():
        assert entry["status"] in {"ok", "failed"}, name
        if entry["status"] == "failed":
            assert entry["error"]["code"] in VIDEO_ERRORS | CONTAINED, (name, entry["error"])
            assert entry["error"]["message"] and not entry.get("frames"), name
        else:
            assert entry["frames"] and all((cache / frame).is_file() for frame in entry["frames"]), name
            assert entry["timestamps"] == sorted(entry["timestamps"]), name
    return entries


def codes(entries: dict[str, dict], prefix: str) -> set[str]:
    return {entry["error"]["code"] if entry["error"] else "ok" for name, entry in entries.items()
            if name.startswith(prefix)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return build_corpus(tmp_path_factory.mktemp("malformed"), cuts=12, flips=20)


def test_the_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 200
    assert len({path.suffix for path in corpus}) >= 8


def test_frames_over_the_malformed_corpus_ends_with_a_status_for_every_file(corpus, tmp_path):
    done = run_frames(corpus, tmp_path / "cache", timeout_s=30.0)
    assert done.returncode == 1, done.stderr[-2000:]  # some failed: that is the exit status, not a crash
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    entries = check_manifest(tmp_path / "cache", corpus)
    assert codes(entries, "zero-length") == {"empty"}
    assert codes(entries, "fifo") | codes(entries, "device-") == {"not_a_file"}
    assert codes(entries, "self-concat") | codes(entries, "hls-") | codes(entries, "sdp-") <= \
        {"format_not_allowed", "unreadable"}
    assert codes(entries, "avi-header-") == {"bad_dimensions"}
    assert codes(entries, "streams-20") == {"too_many_streams"}
    assert codes(entries, "codec-unknown") == {"unknown_codec"}
    assert codes(entries, "timestamps-jump") | codes(entries, "duration-matroska") == {"too_long"}


def test_the_seeds_themselves_are_fine(corpus, tmp_path):
    seeds = sorted((corpus[0].parent.parent / "seeds").iterdir())
    done = run_frames(seeds, tmp_path / "cache", timeout_s=30.0)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert {entry["status"] for entry in check_manifest(tmp_path / "cache", seeds).values()} == {"ok"}


@pytest.mark.slow
def test_a_larger_corpus_too(tmp_path):
    corpus = build_corpus(tmp_path / "big", cuts=60, flips=100)
    assert len(corpus) >= 800
    done = run_frames(corpus, tmp_path / "cache", timeout_s=30.0)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    check_manifest(tmp_path / "cache", corpus)
