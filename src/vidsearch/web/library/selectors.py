"""Reads: the feature store (through the process's Searcher), the keyframe cache and the caption database.

Only ids the store knows reach the filesystem, and a path always comes from the keyframe cache's manifest, never
from the request.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from vidsearch.store.search import SearchMode, SearchOptions, SearchResult
from vidsearch.video.clips import ClipLimits, decode_clip, query_frame_config
from vidsearch.video.stills import decode_image
from vidsearch.web.library import throttle
from vidsearch.web.library.engine import get_library
from vidsearch.web.library.models import Category, UploadJob, VideoClip
from vidsearch.web.library.streaming import RecordedFile


class ClipsBusy(Exception):
    """As many clips as the server decodes at once are being decoded; the message says to try again."""


@dataclass(frozen=True)
class CaptionMatch:
    video_id: str
    caption: str  # the first of the video's captions that contains the query
    category: str | None


@dataclass(frozen=True)
class CaptionMatches:
    count: int  # all videos whose captions contain the query
    matches: list[CaptionMatch]  # the first `limit` of them


@dataclass(frozen=True)
class Segment:
    start: float | None
    end: float | None
    thumbnail: int  # index of its keyframe in the video's keyframes


@dataclass(frozen=True)
class VideoDetail:
    video_id: str
    title: str  # what the pages call it (`video_titles`)
    category: str | None
    captions: list[str]
    duration: float | None
    width: int | None
    height: int | None
    keyframes: int
    segments: list[Segment]  # the store's rows of the video: moments, or one whole-video row


def library_size() -> int:
    """Number of searchable videos."""
    return len(get_library().store.videos())


def search_videos(*, query: str, k: int, mode: SearchMode = "vector", threshold: float | None = None,
                  category: str | None = None, min_confidence: float | None = None) -> SearchResult:
    return get_library().search(query, SearchOptions(k=k, mode=mode, threshold=threshold, category=category,
                                                     min_confidence=min_confidence))


def search_image(*, data: bytes, name: str, k: int, threshold: float | None = None, category: str | None = None,
                 min_confidence: float | None = None) -> SearchResult:
    """An image as the query: decoded (`ImageRejected` when it cannot be), encoded as a one-frame video, searched."""
    from vidsearch.store.indexer import encode_image

    image = decode_image(data, max_bytes=settings.VIDSEARCH_MAX_IMAGE_BYTES,
                         max_pixels=settings.VIDSEARCH_MAX_IMAGE_PIXELS)
    library = get_library()
    options = SearchOptions(k=k, threshold=threshold, category=category, min_confidence=min_confidence)
    frames = query_frame_config(library.model, library.store.info.get("frames"))
    started = time.perf_counter()
    vector = encode_image(library.model, image, frames, views=settings.VIDSEARCH_EXAMPLE_VIEWS)
    encode_ms = (time.perf_counter() - started) * 1e3
    return library.search_example(vector, options, query=f"image {name}").count_stages(encode=encode_ms)


def search_clip(*, file: IO[bytes], name: str, k: int, threshold: float | None = None, category: str | None = None,
                min_confidence: float | None = None) -> SearchResult:
    """A video clip as the query: its keyframes sampled as the library's were, decoded in a child process with a time
    limit (`ClipRejected` when it cannot be; `ClipsBusy` when VIDSEARCH_CLIP_DECODES others are being decoded),
    encoded by the video tower, searched. Its timings add "decode" and "encode" (and count them in "total")."""
    from vidsearch.store.indexer import encode_clip

    library = get_library()
    config = query_frame_config(library.model, library.store.info.get("frames"))
    limits = ClipLimits(max_bytes=settings.VIDSEARCH_MAX_CLIP_BYTES, max_seconds=settings.VIDSEARCH_MAX_CLIP_SECONDS,
                        timeout_s=settings.VIDSEARCH_CLIP_DECODE_SECONDS)
    started = time.perf_counter()
    with throttle.clip_decoding_slot() as may_decode:
        if not may_decode:
            raise ClipsBusy("the server is decoding as many clips as it may at once: try again in a moment")
        clip = decode_clip(file, config, limits=limits)
    decoded = time.perf_counter()
    vector = encode_clip(library.model, clip.frames, views=settings.VIDSEARCH_EXAMPLE_VIEWS)
    encoded = time.perf_counter()
    options = SearchOptions(k=k, threshold=threshold, category=category, min_confidence=min_confidence)
    result = library.search_example(vector, options, query=f"clip {name}")
    return result.count_stages(decode=(decoded - started) * 1e3, encode=(encoded - decoded) * 1e3)


def similar_moments(*, video_id: str, start: float | None, k: int, threshold: float | None = None,
                    category: str | None = None, min_confidence: float | None = None) -> SearchResult | None:
    """More like one moment of a video (its stored vector, no model call); None for an unknown video or moment."""
    options = SearchOptions(k=k, threshold=threshold, category=category, min_confidence=min_confidence)
    return get_library().similar(video_id, start, options)


def caption_matches(*, query: str, limit: int) -> CaptionMatches:
    """The thesis' text match: videos with a caption containing the query, ignoring case (`sentences ILIKE %q%`)."""
    clips = VideoClip.objects.filter(sentences__icontains=query.strip()).select_related("category")
    needle = query.strip().casefold()
    matches = [CaptionMatch(clip.video_id, _first_containing(clip.captions, needle),
                            clip.category.name if clip.category else None) for clip in clips[:limit]]
    return CaptionMatches(clips.count(), matches)


def _first_containing(captions: list[str], needle: str) -> str:
    return next((caption for caption in captions if needle in caption.casefold()), captions[0] if captions else "")


def random_caption() -> str | None:
    """One caption of a random video of the caption database, or None when it has none."""
    clip = VideoClip.objects.exclude(sentences="").order_by("?").first()
    return random.choice(clip.captions) if clip and clip.captions else None


def example_captions(*, count: int) -> list[str]:
    clips = VideoClip.objects.exclude(sentences="").order_by("?")[:count]
    return [clip.captions[0] for clip in clips if clip.captions]


def categories() -> list[Category]:
    return list(Category.objects.filter(video_count__gt=0))


def caption_clip(*, video_id: str) -> VideoClip | None:
    return VideoClip.objects.select_related("category").filter(video_id=video_id).first()


def video_detail(*, video_id: str) -> VideoDetail | None:
    """What the store, the cache and the caption database know about a searchable video; None for unknown ids."""
    library = get_library()
    store = library.store
    info = store.videos().get(video_id)
    entry = library.cache_entry(video_id)
    if info is None or entry is None:
        return None
    values = store.rows.take(store.rows_of(video_id))  # the video's own rows, not a walk over the whole store
    index = {name: i for i, name in enumerate(entry.frames)}
    segments = [Segment(start, end, index.get(thumbnail, 0))
                for start, end, thumbnail in zip(values["start"], values["end"], values["thumbnail"])]
    clip = caption_clip(video_id=video_id)
    captions = clip.captions if clip else list(info.captions)
    category = clip.category.name if clip and clip.category else info.category
    return VideoDetail(video_id, _title(video_id, clip.title if clip else "", captions, entry.source), category, captions, entry.duration, entry.width, entry.height, len(entry.frames),
                       sorted(segments, key=lambda s: s.start or 0.0))


def video_titles(*, video_ids: list[str]) -> dict[str, str]:
    """What the pages call each video: an upload's original file name, else its first caption, else its file's name
    (the id is shown on hover)."""
    clips = VideoClip.objects.in_bulk(video_ids)
    library = get_library()
    titles = {}
    for video_id in video_ids:
        entry = library.cache_entry(video_id)
        clip = clips.get(video_id)
        titles[video_id] = _title(video_id, clip.title if clip else "", clip.captions if clip else [],
                                  entry.source if entry else None)
    return titles


def _title(video_id: str, uploaded_as: str, captions: list[str], source: str | None) -> str:
    return uploaded_as or (captions[0] if captions else Path(source).name if source else video_id)


def thumbnail_index(*, video_id: str, thumbnail: str | None) -> int:
    """Index of a store row's thumbnail among its video's keyframes (0 when unknown)."""
    entry = get_library().cache_entry(video_id)
    if entry is None or thumbnail not in entry.frames:
        return 0
    return entry.frames.index(thumbnail)


def video_file(*, video_id: str) -> RecordedFile | None:
    """The source file of a searchable video, as the keyframe cache recorded it (path, size, modification time)."""
    library = get_library()
    entry = library.cache_entry(video_id)
    if video_id not in library.store.videos() or entry is None or entry.status != "ok":
        return None
    return RecordedFile(Path(entry.source), entry.size, entry.mtime)


def thumbnail_file(*, video_id: str, index: int) -> Path | None:
    """Keyframe `index` of a searchable video (paths in the cache manifest are checked to stay inside it)."""
    library = get_library()
    entry = library.cache_entry(video_id)
    if video_id not in library.store.videos() or entry is None or not 0 <= index < len(entry.frames):
        return None
    return library.cache().root / entry.frames[index]


def upload_jobs(*, owner_id: int, limit: int = 20) -> list[UploadJob]:
    return list(UploadJob.objects.filter(owner_id=owner_id)[:limit])


def upload_job(*, job_id: str, owner_id: int) -> UploadJob | None:
    return UploadJob.objects.filter(id=job_id, owner_id=owner_id).first()
