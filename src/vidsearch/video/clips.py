"""Video clips as queries: a short video → its keyframes, sampled as the library's were, decoded in a child process.

A clip is one moment: its keyframes are picked with the library's keyframe settings (`query_frame_config`: the
store's keyframe cache's sampler, frames, size, fps, JPEG quality; without moments or shots) and come back as the
cache would give them (JPEG-encoded at its quality, decoded), so a clip of a library video is encoded as that
video's own row was.

The clip is untrusted. Its bytes (at most `max_bytes`, counted while they are copied) go to a private temporary
directory (0700, the file 0600, named by vidsearch, never by the client); a fresh child process
(`vidsearch.video.workers`) decodes it there with `DecodeLimits` (the duration limit among them) and a time limit,
and writes the keyframes as a .npy file beside it; the parent loads that without pickle and checks its dtype and
shape before using it. The directory is removed whatever happens. Every refusal is a `ClipRejected` with a one-line
reason.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vidsearch.config import FrameConfig, from_dict, to_dict
from vidsearch.fsutil import write_all
from vidsearch.video.cache import jpeg_bytes, open_cache, select_keyframes
from vidsearch.video.decode import DecodeLimits, VideoError, decode_frames, probe, still_as_keyframe
from vidsearch.video.workers import run_isolated

if TYPE_CHECKING:
    from vidsearch.store.indexer import Model

MAX_CLIP_BYTES = 50 * 2**20
MAX_CLIP_SECONDS = 120.0
CLIP_TIMEOUT_S = 60.0  # decoding one clip, in its child process (a fresh interpreter's start-up included)
CLIP_FILE = "clip"
FRAMES_FILE = "frames.npy"
_CHUNK = 1 << 20
_NOT_A_VIDEO = frozenset({"format_not_allowed", "unreadable", "no_video_stream", "unknown_codec", "no_frames"})


class ClipRejected(ValueError):
    """A file that is not a video clip vidsearch can decode within the limits; the message says why, in one line."""


@dataclass(frozen=True)
class ClipLimits:
    """What one query clip may ask: its size, its duration, and the time its child process may take."""

    max_bytes: int = MAX_CLIP_BYTES
    max_seconds: float = MAX_CLIP_SECONDS
    timeout_s: float = CLIP_TIMEOUT_S


@dataclass(frozen=True)
class ClipFrames:
    """A decoded query clip: its keyframes uint8 [N, S, S, 3] in time order, their times and the clip's length."""

    frames: np.ndarray
    timestamps: list[float]
    duration: float


def query_frame_config(model: Model, cache_dir: str | Path | None) -> FrameConfig:
    """The keyframe settings of the library at `cache_dir` (the store's info "frames") for one moment: no moments, no
    shots. A cache that cannot be read gives the defaults at the model's own frames and image size."""
    try:
        if cache_dir is None:
            raise FileNotFoundError("the store names no keyframe cache")
        settings = open_cache(cache_dir).settings
    except (OSError, ValueError):  # CacheFormatError and unreadable JSON are ValueErrors
        from vidsearch.store.indexer import model_frames

        settings = FrameConfig(frames=model_frames(model), size=int(model.image_size))
    return replace(settings, segment_seconds=None, scenes=False)


def decode_clip(source: bytes | str | os.PathLike | IO[bytes], config: FrameConfig, *,
                limits: ClipLimits = ClipLimits()) -> ClipFrames:
    """A clip's keyframes by `config` (see the module docstring); `source` is its bytes, a local file's path, or an
    open binary file (an upload), read in chunks. ClipRejected when it is not a usable clip within `limits`."""
    directory = Path(tempfile.mkdtemp(prefix="vidsearch-clip-"))  # 0700
    try:
        _copy_limited(source, directory / CLIP_FILE, limits.max_bytes)
        task = {"dir": str(directory), "settings": to_dict(config),
                "limits": asdict(DecodeLimits(max_seconds=limits.max_seconds, timeout_s=limits.timeout_s))}
        with closing(run_isolated(extract_clip, [task], workers=1, timeout_s=limits.timeout_s)) as outcomes:
            outcome = next(outcomes)
        if outcome.failure:
            raise ClipRejected(_failure_reason(outcome.failure, outcome.detail, limits.timeout_s))
        if "error" in outcome.result:
            raise ClipRejected(_error_reason(outcome.result["error"]["code"], outcome.result["error"]["message"]))
        frames = _load_frames(directory / FRAMES_FILE, config, count=outcome.result["frames"])
        return ClipFrames(frames, [float(t) for t in outcome.result["timestamps"]], float(outcome.result["duration"]))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def read_clip(path: str | os.PathLike, *, max_bytes: int = MAX_CLIP_BYTES) -> bytes:
    """A local clip file's bytes; ClipRejected when it is missing, not a regular file, empty or over `max_bytes`
    (judged by its size before reading, and by what was read)."""
    with _open_regular(path) as reader:
        _check_size(os.fstat(reader.fileno()).st_size, max_bytes)
        data = reader.read(max_bytes + 1)
    _check_size(len(data), max_bytes, exact=False)
    if not data:
        raise ClipRejected("the file is empty")
    return data


def _copy_limited(source: bytes | str | os.PathLike | IO[bytes], path: Path, max_bytes: int) -> None:
    """`source` into a new 0600 file at `path`; ClipRejected once it passes `max_bytes` (a file: before reading)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            _check_size(len(source), max_bytes)
            write_all(fd, source)
        elif isinstance(source, (str, os.PathLike)):
            with _open_regular(source) as reader:
                _check_size(os.fstat(reader.fileno()).st_size, max_bytes)
                _copy_chunks(reader, fd, max_bytes)
        else:
            _copy_chunks(source, fd, max_bytes)
    finally:
        os.close(fd)
    if path.stat().st_size == 0:
        raise ClipRejected("the file is empty")


def _open_regular(path: str | os.PathLike) -> IO[bytes]:
    """A local regular file opened for reading (without blocking: a FIFO put there cannot hang the caller)."""
    try:
        handle = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as error:
        raise ClipRejected(error.strerror or str(error)) from None
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise ClipRejected("not a regular file")
    return handle


def _copy_chunks(reader: IO[bytes], fd: int, max_bytes: int) -> None:
    copied = 0
    while chunk := reader.read(_CHUNK):
        copied += len(chunk)
        _check_size(copied, max_bytes, exact=False)
        write_all(fd, chunk)


def _check_size(size: int, max_bytes: int, *, exact: bool = True) -> None:
    if size > max_bytes:
        told = f"{size} bytes" if exact else f"over {max_bytes} bytes"
        raise ClipRejected(f"the clip is {told}: the limit is {max_bytes}")


def _load_frames(path: Path, config: FrameConfig, *, count: int) -> np.ndarray:
    """The child's keyframes, read without pickle, as exactly what was asked: uint8 [count, S, S, 3], count ≤ frames."""
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: no data read yet
    except (OSError, ValueError) as error:
        raise ClipRejected(f"the decoder's keyframes cannot be read: {error}") from None
    expected = (count, config.size, config.size, 3)
    if frames.dtype != np.uint8 or frames.shape != expected or not 1 <= count <= config.frames:
        raise ClipRejected(f"the decoder returned {frames.dtype} {frames.shape}, not uint8 {expected}")
    return np.array(frames)


def _failure_reason(failure: str, detail: str, timeout_s: float) -> str:
    if failure == "timeout":
        return f"decoding the clip took longer than {timeout_s:g} s"
    if failure == "crashed":
        return f"the decoder crashed on the clip ({detail})"
    return f"the clip cannot be decoded: {detail}"


def _error_reason(code: str, message: str) -> str:
    if code in _NOT_A_VIDEO:
        return f"not a video vidsearch can decode (MP4, MOV, MKV, WebM, AVI or MPEG-TS): {message}"
    if code == "too_long":
        return f"the clip is too long: {message}"
    return f"the clip cannot be decoded: {code}: {message}"


# --- in the child process -----------------------------------------------------------------------------------------


def extract_clip(task: dict[str, Any]) -> dict[str, Any]:
    """`run_isolated` target: the keyframes of `task["dir"]/clip` into `task["dir"]/frames.npy` (0600), as the cache
    would store and give them back. Returns {"frames": n, "timestamps": [...], "duration": s} or {"error": {"code",
    "message"}}."""
    directory = Path(task["dir"])
    config, limits = from_dict(FrameConfig, task["settings"]), DecodeLimits(**task["limits"])
    source = directory / CLIP_FILE
    try:
        info = probe(source, limits=limits)  # refuses a clip over limits.max_seconds, declared or demuxed
        chosen, _ = select_keyframes(source, info, config, limits=limits)
        frames = decode_frames(source, info=info, indices=chosen.tolist(), size=config.size, limits=limits)
    except VideoError as error:
        return {"error": {"code": error.code, "message": error.message}}
    stored = np.stack([_as_stored(frame, config.jpeg_quality) for frame in frames])
    fd = os.open(directory / FRAMES_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        np.save(out, stored, allow_pickle=False)
    return {"frames": len(stored), "timestamps": [round(float(info.timestamps[i]), 6) for i in chosen],
            "duration": round(info.duration, 6)}


def still_as_stored(image: np.ndarray, config: FrameConfig) -> np.ndarray:
    """An image query [H, W, 3] as a library keyframe of `config` is seen: `still_as_keyframe` at its size, then
    JPEG at its quality and back. The model learnt, and the library was indexed, on keyframes made so."""
    return _as_stored(still_as_keyframe(image, config.size), config.jpeg_quality)


def _as_stored(frame: np.ndarray, quality: int) -> np.ndarray:
    """A keyframe as the cache gives it back: JPEG at the cache's quality, decoded to RGB."""
    with Image.open(io.BytesIO(jpeg_bytes(frame, quality))) as image:
        return np.asarray(image.convert("RGB"))
