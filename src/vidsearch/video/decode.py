"""Decoding local video files with PyAV, safely and only as much as needed.

Why PyAV: its wheels bundle FFmpeg (no system packages), and it exposes what this module needs below the level of
"give me frame N": a demux-only pass (every frame's timestamp without decoding), per-packet `skip_frame` (so frames
nobody asked for are not even decoded when no other frame depends on them) and the options of `avformat_open_input`
(the whitelists below). TorchCodec decodes whole batches well but hides those three.

Safety, since video files come from users:
- only regular local files are opened (no URLs or FFmpeg protocols, no devices or pipes), by absolute path, with
  `protocol_whitelist=file`;
- only real container demuxers are allowed (`format_whitelist`): FFmpeg probes the content, not the name, so an HLS
  or ffconcat playlist saved as `.mp4`/`.avi` would otherwise open the files it lists; `enable_drefs=0` keeps MP4
  external data references closed too;
- opening a file decodes nothing: FFmpeg reads the stream info with every frame skipped (it would otherwise decode
  the first frames, up to 7 for H.264, before any limit is checked); a file whose frame size only decoding tells is
  opened again with the pixel limit on those decoders;
- declared duration, frame size and stream count are checked against `DecodeLimits` before decoding, and every
  decoded frame again: the decoder itself refuses a frame above `max_side`² pixels before allocating it (FFmpeg's
  `max_pixels`), and a frame wider or taller than `max_side` fails before any conversion (a file may declare and
  start small and then grow: MJPEG frames each carry their own size);
- hangs and crashes are contained by the caller, which runs each file in a child process (`vidsearch.video.workers`).

Timestamps are seconds from the first frame, in presentation order; frame `i` is the i-th frame shown.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import av.logging
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

ALLOWED_DEMUXERS = ("mov", "matroska", "avi", "mpegts")
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "protocol_whitelist": "file",
    "enable_drefs": "0",
}
# Codec options for the decoders FFmpeg opens while it reads a file's stream info: they skip every frame, so opening
# decodes nothing (see the module's docstring); it also saves the cost of those frames, twice a video.
_NO_PROBE_DECODING = {"skip_frame": "all"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DISPLAY_MATRIX = re.compile(r"^\s*Display ?Matrix: rotation of (-?\d+(?:\.\d+)?) degrees\s*$", re.IGNORECASE)
_TRUNCATION_TOLERANCE_S = 1.0


class VideoError(Exception):
    """A video that cannot be used, with a short machine-readable code (kept in the cache manifest)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodeLimits:
    """What a single file may ask of the decoder; anything beyond is refused before decoding."""

    max_seconds: float = 4 * 3600.0
    max_side: int = 8192
    max_streams: int = 16
    timeout_s: float = 900.0


@dataclass(frozen=True)
class VideoInfo:
    """What a demux-only pass and the first decoded frame tell about the video stream."""

    format: str
    codec: str
    pts: np.ndarray  # int64, the stream's own timestamps, presentation order, one per frame
    timestamps: np.ndarray  # float64 seconds from the first frame
    duration: float
    fps: float
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # degrees counter-clockwise to apply for display: 0, 90, 180 or 270
    keyframes: np.ndarray  # bool, one per frame: the container marks it a random-access point (decodable alone)


def check_local_file(path: str | Path) -> Path:
    """The absolute path of a regular local file, or VideoError: URLs, devices and pipes never reach FFmpeg."""
    text = str(path)
    if _URL.match(text) and not Path(text).exists():
        raise VideoError("not_local", f"only local files can be read, not {text!r}")
    resolved = Path(text).resolve()
    try:
        mode = resolved.stat().st_mode
    except OSError as error:
        raise VideoError("not_found", f"cannot read {text}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise VideoError("not_a_file", f"{text} is not a regular file")
    if resolved.stat().st_size == 0:
        raise VideoError("empty", f"{text} is empty")
    return resolved


@contextmanager
def open_video(path: str | Path, *, limits: DecodeLimits, threads: int = 1) -> Iterator[av.container.InputContainer]:
    """Open a checked local file with the whitelists, check the limits, and set up its first video stream."""
    source = check_local_file(path)
    container = _open_container(source, options=_NO_PROBE_DECODING)
    if _needs_probe_decoding(container):
        container.close()
        container = _open_container(source, options={"max_pixels": str(limits.max_side ** 2)})
    try:
        _check_limits(container, limits)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = min(threads, _usable_cores())  # more threads than cores only cost
        stream.codec_context.options = {"max_pixels": str(limits.max_side ** 2)}
        yield container
    finally:
        container.close()


def _open_container(source: Path, *, options: dict[str, str]) -> av.container.InputContainer:
    try:
        return av.open(str(source), container_options=_OPEN_OPTIONS, options=options)
    except av.ArgumentError:
        raise VideoError("format_not_allowed", f"not a {'/'.join(ALLOWED_DEMUXERS)} container") from None
    except av.FFmpegError as error:
        raise VideoError("unreadable", _ffmpeg_message(error)) from None


def _needs_probe_decoding(container: av.container.InputContainer) -> bool:
    """Whether the first video stream's frame size is known only from decoding (e.g. a bare stream in MPEG-TS)."""
    if not container.streams.video:
        return False
    context = container.streams.video[0].codec_context
    return context is not None and (context.width <= 0 or context.height <= 0)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_limits(container: av.container.InputContainer, limits: DecodeLimits) -> None:
    if len(container.streams) > limits.max_streams:
        raise VideoError("too_many_streams", f"{len(container.streams)} streams (limit {limits.max_streams})")
    if not container.streams.video:
        raise VideoError("no_video_stream", "the file has no video stream")
    context = container.streams.video[0].codec_context
    if context is None:  # PyAV opens no decoder for a codec FFmpeg does not know (e.g. a damaged codec id)
        raise VideoError("unknown_codec", "the video stream's codec is unknown")
    if not (0 < context.width <= limits.max_side and 0 < context.height <= limits.max_side):
        raise VideoError("bad_dimensions", f"declared size {context.width}×{context.height} (limit {limits.max_side})")
    declared = _declared_seconds(container)
    if declared is not None and declared > limits.max_seconds:
        raise VideoError("too_long", f"{declared:.0f} s (limit {limits.max_seconds:.0f} s)")


def _declared_seconds(container: av.container.InputContainer) -> float | None:
    stream = container.streams.video[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def probe(path: str | Path, *, limits: DecodeLimits) -> VideoInfo:
    """Every frame's timestamp by a demux-only pass, and the stream's rotation; refuses truncated files.

    Nothing is decoded: the rotation is the stream's display matrix (`_display_rotation`), which the decoder would
    attach to every frame. Whether frames decode at all is for `decode_frames` to find out."""
    with open_video(path, limits=limits) as container:
        stream = container.streams.video[0]
        rotation = _display_rotation(container, stream.index)
        pts, keyframes, end, first_rotation = _demux_timestamps(container, stream, limits, rotation is None)
        rotation = first_rotation if rotation is None else rotation
        declared_seconds, declared_frames = _declared_seconds(container), stream.frames
        tick = float(stream.time_base)
        rate = float(stream.average_rate) if stream.average_rate else None
        context = stream.codec_context
        header = (container.format.name, context.name, context.width, context.height)
    duration = (end - int(pts[0])) * tick
    if len(pts) < declared_frames:
        raise VideoError("truncated", f"{len(pts)} of the {declared_frames} frames the file lists are present")
    if declared_seconds is not None and duration < declared_seconds - _TRUNCATION_TOLERANCE_S:
        raise VideoError("truncated", f"frames stop at {duration:.2f} s of a declared {declared_seconds:.2f} s")
    form, codec, width, height = header
    if rotation % 180:
        width, height = height, width
    timestamps = (pts - pts[0]).astype(np.float64) * tick
    return VideoInfo(form, codec, pts, timestamps, duration, rate or len(pts) / duration, width, height, rotation,
                     keyframes)


def _display_rotation(container: av.container.InputContainer, index: int) -> int | None:
    """Degrees counter-clockwise from stream `index`'s display matrix (0 without one), or None if unreadable.

    PyAV has no getter for a stream's side data, but FFmpeg's own description of the file lists it under the stream
    ("Display Matrix: rotation of -90.00 degrees"); PyAV hands that text over only while its log is on. Metadata
    values never start a line with those words (FFmpeg indents their continuation lines to the colon); a crafted
    key with a line break could, which turns only that file's own keyframes. A line under the stream that names a
    matrix in other words (another FFmpeg's wording) gives None, so the caller decodes the first frame instead of
    taking the video for upright."""
    level, repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.INFO)
    av.logging.set_skip_repeated(False)  # identical consecutive pieces of the text must all come through
    try:
        text = container.dumps_format()
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(repeated)
    lines = text.splitlines()
    header = re.compile(rf"^\s*Stream #0:{index}\b")  # not #0:10 for #0:1
    start = next((n for n, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    for line in lines[start + 1:]:
        if line.lstrip().startswith("Stream #"):
            break
        if match := _DISPLAY_MATRIX.match(line):
            return _quarter_turns(float(match[1]))
        if "matrix" in line.lower():  # a display matrix in words this FFmpeg did not use: decode the first frame
            return None
    return 0


def _quarter_turns(degrees: float) -> int:
    return round(degrees / 90) % 4 * 90


def _demux_timestamps(container, stream, limits: DecodeLimits,
                      decode_first: bool) -> tuple[np.ndarray, np.ndarray, int, int | None]:
    """Presentation timestamps of all frames, which are keyframes, the end of the last one, and (`decode_first`:
    the first frame is decoded for it) the first frame's rotation."""
    seen: dict[int, bool] = {}
    first, end, rotation = None, None, None
    max_ticks = limits.max_seconds / float(stream.time_base)
    try:
        for packet in container.demux(stream):
            if decode_first and rotation is None:
                rotation = _first_rotation(stream, packet, limits)  # the last, empty packet flushes the decoder
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None or packet.size == 0:
                continue
            seen[stamp] = seen.get(stamp, False) or packet.is_keyframe
            first = stamp if first is None else min(first, stamp)
            end = max(end or stamp, stamp + max(packet.duration or 0, 1))
            if stamp - first > max_ticks:
                raise VideoError("too_long", f"frames go on past {limits.max_seconds:.0f} s")
    except av.FFmpegError as error:
        raise VideoError("corrupt", _ffmpeg_message(error)) from None
    if not seen:
        raise VideoError("no_frames", "the video stream has no frames")
    if decode_first and rotation is None:
        raise VideoError("decode_error", "no frame could be decoded")
    stamps = sorted(seen)
    return np.array(stamps, dtype=np.int64), np.array([seen[t] for t in stamps], dtype=bool), end, rotation


def _first_rotation(stream, packet, limits: DecodeLimits) -> int | None:
    """Feed packets until the decoder gives its first frame; its display matrix says how to turn frames."""
    try:
        frames = stream.codec_context.decode(packet)
    except av.FFmpegError as error:
        raise _decoding_failed(stream.codec_context, error, limits) from None
    if not frames:
        return None
    check_frame_size(frames[0], limits)
    rotation = frames[0].rotation
    return 0 if rotation is None or rotation == -(2**31) else _quarter_turns(rotation)


def decode_frames(path: str | Path, *, info: VideoInfo, indices: list[int], size: int, limits: DecodeLimits,
                  threads: int = 1) -> np.ndarray:
    """Frames `indices` as uint8 [N, size, size, 3]: short side to `size` (bicubic), centre crop, upright.

    Only what the wanted frames depend on is decoded (see `_decode_only`); only the wanted frames are converted to
    RGB, and only at the target size, all by one scaler (a new one per frame costs more than its scaling).
    """
    wanted = {int(info.pts[i]): position for position, i in enumerate(indices)}
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    scaler = VideoReformatter()
    with open_video(path, limits=limits, threads=threads) as container:
        stream = container.streams.video[0]
        for frame in _decode_only(stream, container.demux(stream), wanted, info.pts[info.keyframes], limits):
            check_frame_size(frame, limits)
            out[wanted.pop(frame.pts)] = _square(frame, size=size, rotation=info.rotation, scaler=scaler)
    if wanted:
        missing = sorted(float(info.timestamps[indices[p]]) for p in wanted.values())
        raise VideoError("decode_error", f"{len(missing)} frame(s) could not be decoded, first at {missing[0]:.3f} s")
    return out


def _decode_only(stream, packets: Iterator[av.Packet], wanted: dict[int, int], keyframe_pts: np.ndarray,
                 limits: DecodeLimits) -> Iterator[av.VideoFrame]:
    """The wanted frames (by pts) out of the decoder, which is sent as little as they need, in decoding order.

    Each packet gets a `skip_frame` level: a wanted frame is decoded in full; any other frame is decoded only if it
    may be a reference of a wanted frame not yet sent, i.e. one that shows before the next keyframe (`NONREF`: frames
    nobody refers to are dropped), and not at all otherwise (`ALL`: the rest of a group of pictures after its last
    wanted frame, and groups without one). A keyframe that follows skipped packets starts afresh, as after a seek:
    the decoder is drained and reset, or it would take the skipped frames for lost ones and hold back what follows
    (open groups of pictures). Once every wanted frame is sent, the decoder is drained and reading stops.
    """
    context = stream.codec_context
    unsent = set(wanted)
    next_keyframe, skipped = np.inf, False  # until the first keyframe, nothing may be skipped
    try:
        for packet in packets:
            if not unsent:
                break
            if packet.is_keyframe and packet.pts is not None:
                later = keyframe_pts[np.searchsorted(keyframe_pts, packet.pts, side="right"):]
                next_keyframe = later[0] if len(later) else np.inf
            level = _skip_level(packet.pts, unsent, next_keyframe)
            if level == "ALL":
                skipped = True
            elif skipped and packet.is_keyframe:
                yield from (frame for frame in context.decode(None) if frame.pts in wanted)
                context.flush_buffers()
                skipped = False
            context.skip_frame = level
            unsent.discard(packet.pts)
            yield from (frame for frame in context.decode(packet) if frame.pts in wanted)
        else:
            return  # the packets ran out: their last, empty one has drained the decoder
        yield from (frame for frame in context.decode(None) if frame.pts in wanted)
    except av.FFmpegError as error:
        raise _decoding_failed(context, error, limits) from None


def _skip_level(pts: int | None, unsent: set[int], next_keyframe: float) -> str:
    if pts is None or pts in unsent:
        return "DEFAULT"
    return "NONREF" if unsent and min(unsent) < next_keyframe else "ALL"


def iter_frames(path: str | Path, *, limits: DecodeLimits, width: int | None = None,
                height: int | None = None, threads: int = 1) -> Iterator[np.ndarray]:
    """Every frame's luma as uint8 [H, W] (scaled to width×height when given), in presentation order, as coded."""
    scaler = VideoReformatter()
    with open_video(path, limits=limits, threads=threads) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                check_frame_size(frame, limits)
                yield scaler.reformat(frame, format="gray", width=width, height=height).to_ndarray()
        except av.FFmpegError as error:
            raise _decoding_failed(stream.codec_context, error, limits) from None


def check_frame_size(frame: av.VideoFrame, limits: DecodeLimits) -> None:
    """Refuse a decoded frame outside the size limit before anything converts or copies it."""
    if not (0 < frame.width <= limits.max_side and 0 < frame.height <= limits.max_side):
        at = f" at {float(frame.time):.3f} s" if frame.time is not None else ""
        raise VideoError("bad_dimensions", f"a frame{at} is {frame.width}×{frame.height} (limit {limits.max_side})")


def _decoding_failed(context, error: av.FFmpegError, limits: DecodeLimits) -> VideoError:
    """The error for a decoder that stopped: the decoder refuses a frame above the pixel limit, and says only
    'invalid argument' with its size reset to 0, so the size it is left with tells that case apart."""
    if not (0 < context.width <= limits.max_side and 0 < context.height <= limits.max_side):
        return VideoError("bad_dimensions", f"a frame is larger than {limits.max_side}×{limits.max_side} "
                                            f"({_ffmpeg_message(error)})")
    return VideoError("decode_error", _ffmpeg_message(error))


MAX_ASPECT = 4  # an image longer than this many times its short side is first cut to its middle at this aspect


def central(image: np.ndarray) -> np.ndarray:
    """The image, or its middle part at MAX_ASPECT : 1 when it is longer than that. Scaling a 1 × 40 M pixel image's
    short side to 224 would ask for a 9 G pixel image; the centre crop that follows keeps only its middle anyway
    (the filter's few pixels past the crop aside), so the output is the same for any image within 4 : 1."""
    height, width = image.shape[:2]
    short = max(1, min(height, width))
    keep = short * MAX_ASPECT
    if width > keep:
        left = (width - keep) // 2
        return image[:, left:left + keep]
    if height > keep:
        top = (height - keep) // 2
        return image[top:top + keep]
    return image


def still_as_keyframe(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB still uint8 [H, W, 3] as this module makes a keyframe of a video frame: in YUV 4:2:0 (as nearly every
    video is coded: colour at half resolution), short side to `size` by swscale's bicubic, centre-cropped."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels [H, W, 3], got {image.dtype} {image.shape}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(central(image)), format="rgb24").reformat(format="yuv420p")
    return np.ascontiguousarray(_square(frame, size=size, rotation=0, scaler=VideoReformatter()))


def _square(frame: av.VideoFrame, *, size: int, rotation: int, scaler: VideoReformatter) -> np.ndarray:
    """Short side to `size` with bicubic scaling in swscale, turned upright, centre-cropped to size×size."""
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    rgb = scaler.reformat(frame, format="rgb24", width=width, height=height, interpolation="BICUBIC").to_ndarray()
    rgb = np.rot90(rgb, k=rotation // 90)
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return rgb[top:top + size, left:left + size]


def _ffmpeg_message(error: av.FFmpegError) -> str:
    return error.strerror or str(error)
