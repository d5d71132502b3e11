"""Search results and videos as the pages and the API show them: URLs instead of cache paths, times as labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from django.urls import reverse

from vidsearch.store.search import Moment, SearchResult, VideoHit
from vidsearch.web.library import selectors
from vidsearch.web.library.selectors import VideoDetail

#: search parameters a player link carries, so its back link returns to the same results
STATE_KEYS = ("q", "text", "k", "threshold", "category", "min_confidence")
#: how the page says a hit's confidence label
CONFIDENCE_WORDS = {"high": "good match", "medium": "possible match", "low": "weak match"}


@dataclass(frozen=True)
class MomentView:
    start: float | None
    end: float | None
    score: float
    confidence: float
    label: str  # "0:02–0:04", or "whole video"
    thumbnail_url: str
    player_url: str


@dataclass(frozen=True)
class SegmentView:
    start: float | None
    end: float | None
    label: str
    thumbnail_url: str
    player_url: str


@dataclass(frozen=True)
class HitView:
    video_id: str
    title: str
    category: str | None
    score: float | None
    fused_score: float | None
    confidence: float | None  # in [0, 1], its best moment's (vidsearch.store.search.confidence_of)
    confidence_label: str | None  # high, medium, low
    text_match: bool
    matched_moments: int
    thumbnail_url: str
    player_url: str
    video_url: str
    moments: list[MomentView]
    similar_url: str  # the page of videos like its best moment

    @property
    def confidence_words(self) -> str | None:
        """The confidence label as the page says it: good, possible or weak match."""
        return CONFIDENCE_WORDS.get(self.confidence_label or "")


def clock(seconds: float) -> str:
    """0:07, 1:02:03; tenths when not whole (0:02.5)."""
    whole = abs(seconds - round(seconds)) < 0.05
    minutes, rest = divmod(round(seconds) if whole else seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:02.0f}" if whole else f"{rest:04.1f}"
    return f"{hours}:{minutes:02d}:{text}" if hours else f"{minutes}:{text}"


def span_label(start: float | None, end: float | None) -> str:
    return "whole video" if start is None or end is None else f"{clock(start)}–{clock(end)}"


def state_of(data: Mapping[str, Any]) -> dict[str, str]:
    """The non-empty search parameters among `data` (cleaned form data), as query-string values."""
    state = {}
    for key in STATE_KEYS:
        value = data.get(key)
        if value not in (None, "", False):
            state[key] = "1" if value is True else str(value)
    return state


def with_query(url: str, params: Mapping[str, Any]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


def player_url(video_id: str, start: float | None, end: float | None, state: Mapping[str, str]) -> str:
    moment = {"t": f"{start:g}", "end": f"{end:g}"} if start is not None and end is not None else {}
    return with_query(reverse("player", args=[video_id]), {**moment, **state})


def similar_url(video_id: str, start: float | None) -> str:
    """The page of videos like the moment at `start` (the video's first without one)."""
    return with_query(reverse("similar", args=[video_id]), {} if start is None else {"start": f"{start:g}"})


def thumbnail_url(video_id: str, index: int) -> str:
    return reverse("thumbnail", args=[video_id, index])


def present_hits(result: SearchResult, *, state: Mapping[str, str]) -> list[HitView]:
    titles = selectors.video_titles(video_ids=[hit.video_id for hit in result.hits])
    return [_hit_view(hit, state, titles[hit.video_id]) for hit in result.hits]


def _hit_view(hit: VideoHit, state: Mapping[str, str], title: str) -> HitView:
    moments = [_moment_view(hit.video_id, moment, state) for moment in hit.moments]
    best = moments[0] if moments else None
    return HitView(hit.video_id, title, hit.category, _rounded(hit.score), _rounded(hit.fused_score),
                   _rounded(hit.confidence), hit.confidence_label, hit.text_match,
                   hit.matched_moments,
                   best.thumbnail_url if best else thumbnail_url(hit.video_id, 0),
                   best.player_url if best else player_url(hit.video_id, None, None, state),
                   reverse("video-file", args=[hit.video_id]), moments,
                   similar_url(hit.video_id, hit.moments[0].start if hit.moments else None))


def _moment_view(video_id: str, moment: Moment, state: Mapping[str, str]) -> MomentView:
    index = selectors.thumbnail_index(video_id=video_id, thumbnail=moment.thumbnail)
    return MomentView(moment.start, moment.end, _rounded(moment.score), _rounded(moment.confidence),
                      span_label(moment.start, moment.end),
                      thumbnail_url(video_id, index), player_url(video_id, moment.start, moment.end, state))


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 6)


def api_search(result: SearchResult) -> dict[str, Any]:
    """`GET /api/search`'s body (schema `SearchResult` in openapi.py)."""
    return {
        "query": result.query,
        "mode": result.mode,
        "hits": [asdict(hit) for hit in present_hits(result, state={})],
        "confident": result.confident,
        "text_matches": [{"video_id": match.video_id, "category": match.category, "captions": match.captions,
                          "player_url": player_url(match.video_id, None, None, {})} for match in result.text_matches],
        "store_version": result.store_version,
        "index": result.index,
        "cached_query": result.cached_query,
        "timings_ms": result.timings_ms,
    }


def api_video(detail: VideoDetail) -> dict[str, Any]:
    """`GET /api/videos/{id}`'s body (schema `Video` in openapi.py)."""
    video_id = detail.video_id
    return {
        "video_id": video_id,
        "title": detail.title,
        "category": detail.category,
        "captions": detail.captions,
        "duration": detail.duration,
        "width": detail.width,
        "height": detail.height,
        "video_url": reverse("video-file", args=[video_id]),
        "player_url": player_url(video_id, None, None, {}),
        "thumbnail_url": thumbnail_url(video_id, 0),
        "segments": [asdict(segment) for segment in segment_views(detail, state={})],
    }


def segment_views(detail: VideoDetail, *, state: Mapping[str, str]) -> list[SegmentView]:
    """The video's rows in the store (its moments, or the whole video), each linking to the player there."""
    return [SegmentView(s.start, s.end, span_label(s.start, s.end), thumbnail_url(detail.video_id, s.thumbnail),
                        player_url(detail.video_id, s.start, s.end, state)) for s in detail.segments]
