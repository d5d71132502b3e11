"""The decoding check of an uploaded file, run in a child process (`vidsearch.video.workers`) with a time limit.

A file passes when the decoder's whitelisted demuxers open it, its limits hold, and its first frame decodes. Before
the decoder's full pass, a demux-only count bounds the work a file can ask for: at most `max_packets` packets in all
and, past the first PACKET_SLACK, at most `max_packets_per_second` per second of the timestamps seen so far (a file
of millions of tiny packets is refused after a few thousand, not after reading them all). No Django here: the child
imports this module alone.
"""

from __future__ import annotations

from typing import Any

import av

from vidsearch.video.decode import DecodeLimits, VideoError, decode_frames, open_video, probe

#: file suffix by demuxer (FFmpeg's names) and, for Matroska, by codec: WebM plays in every browser
SUFFIXES = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "avi": ".avi", "mpegts": ".ts"}
WEBM_CODECS = frozenset({"vp8", "vp9", "av1"})
PACKET_SLACK = 1000  # packets allowed before the rate is judged (headers, a first keyframe split in many packets)


def check_video(task: dict[str, Any]) -> dict[str, Any]:
    """Count packets, probe the file and decode its first frame; VideoError (reported to the parent) when it is not a
    usable video or asks for too much work."""
    limits = DecodeLimits(max_seconds=task["max_seconds"])
    count_packets(task["path"], limits=limits, max_packets=task["max_packets"],
                  max_per_second=task["max_packets_per_second"])
    info = probe(task["path"], limits=limits)
    decode_frames(task["path"], info=info, indices=[0], size=16, limits=limits)
    return {"format": info.format, "codec": info.codec, "duration": info.duration, "width": info.width,
            "height": info.height, "suffix": suffix_of(info.format, info.codec)}


def count_packets(path: str, *, limits: DecodeLimits, max_packets: int, max_per_second: float) -> int:
    """The number of packets of all streams (demuxed, not decoded); VideoError as soon as a limit is passed."""
    count, first, last = 0, None, None
    with open_video(path, limits=limits) as container:
        try:
            for packet in container.demux():
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None and packet.time_base is not None:
                    seconds = float(stamp * packet.time_base)
                    first = seconds if first is None else min(first, seconds)
                    last = seconds if last is None else max(last, seconds)
                count += 1
                if count > max_packets:
                    raise VideoError("too_many_packets", f"more than {max_packets} packets")
                span = (last - first) if first is not None else 0.0
                if count > PACKET_SLACK + max_per_second * span:
                    raise VideoError("packet_rate", f"{count} packets within {span:.3f} s "
                                                    f"(limit {max_per_second:g} per second)")
        except av.FFmpegError as error:
            raise VideoError("corrupt", str(error)) from None
    return count


def suffix_of(container: str, codec: str) -> str:
    if container.startswith("matroska"):
        return ".webm" if codec in WEBM_CODECS else ".mkv"
    return SUFFIXES.get(container, ".mp4")
