"""The decoding check of an uploaded file, run in a child process (`vidsearch.video.workers`) with a time limit.

A file passes when the decoder's whitelisted demuxers open it, its limits hold, and its first frame decodes. No
Django here: the child imports this module alone.
"""

from __future__ import annotations

from typing import Any

from vidsearch.video.decode import DecodeLimits, decode_frames, probe

#: file suffix by demuxer (FFmpeg's names) and, for Matroska, by codec: WebM plays in every browser
SUFFIXES = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "avi": ".avi", "mpegts": ".ts"}
WEBM_CODECS = frozenset({"vp8", "vp9", "av1"})


def check_video(task: dict[str, Any]) -> dict[str, Any]:
    """Probe the file and decode its first frame; VideoError (reported to the parent) when it is not a usable video."""
    limits = DecodeLimits(max_seconds=task["max_seconds"])
    info = probe(task["path"], limits=limits)
    decode_frames(task["path"], info=info, indices=[0], size=16, limits=limits)
    return {"format": info.format, "codec": info.codec, "duration": info.duration, "width": info.width,
            "height": info.height, "suffix": suffix_of(info.format, info.codec)}


def suffix_of(container: str, codec: str) -> str:
    if container.startswith("matroska"):
        return ".webm" if codec in WEBM_CODECS else ".mkv"
    return SUFFIXES.get(container, ".mp4")
