"""Query → hits: the library function the CLI and the web app call (contract in docs/contracts.md, "Search").

A query is encoded by a text encoder passed in (anything with `encode(list[str]) -> [N, D]` float32 L2-normalised
and a `fingerprint`), through an LRU cache keyed by the query text; the vector's top rows (segment by segment,
exactly or through the store's persisted FAISS indexes, see `index.py`) are grouped by video, best moment first.
Hybrid mode also matches the query as a case-insensitive substring of the videos' captions (the thesis' text-match
mode) and can fuse both rankings by reciprocal rank fusion.

A query can also be an example: a vector of the video space (an image encoded as a one-frame video, a stored moment:
`search_example`).

Every moment carries a confidence in [0, 1]: how far its cosine stands above what the same row scores against a null
bank — generic captions (`NULL_CAPTIONS`, encoded once per Searcher) for a text query, the stored vectors of rows
spread over the store for an example — as a z-score through a logistic (`confidence_of`), times its closeness to
the best moment the search returned (`closeness`: a partial match far below a good best is not a good match);
contract in docs/contracts.md, "Search".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np

from vidsearch.store.index import IndexKind, index_for, l2_normalised
from vidsearch.store.store import Store, read_manifest

logger = logging.getLogger(__name__)

SearchMode = Literal["vector", "text", "hybrid"]
ConfidenceLabel = Literal["high", "medium", "low"]
RRF_K = 60

# Captions for what no particular library holds: each row's scores against them are its null distribution.
NULL_CAPTIONS = (
    "a photo", "a video", "something happens", "a thing", "an object", "people", "a person walking", "a room",
    "outdoors", "a picture of a scene", "a man speaking", "a woman smiling", "animals", "a vehicle", "food",
    "a building", "nature", "sports", "text on a screen", "a group of people", "water", "the sky", "a face",
    "an animal running", "music playing", "a game", "a toy", "a landscape", "indoors", "a close up", "random noise",
    "abstract pattern", "hands", "furniture", "a street", "a crowd", "a computer", "a book", "clothes", "a plant",
    "light", "darkness", "colors", "a shape", "a line", "motion", "nothing", "an empty scene", "a cartoon",
    "a drawing",
)
NULL_Z_MIDPOINT = 5.0  # z-score over the row's null where confidence is 0.5 (fitted on the demo, docs/contracts.md)
NULL_EXAMPLE_ROWS = 50  # an example query's null bank: this many stored rows, evenly spaced over the store
HIGH_CONFIDENCE = 0.8
CONFIDENT = 0.5  # at or above: "medium"; below: "low", not a confident match


class QueryEncoder(Protocol):
    """Turns texts into float32 L2-normalised vectors [N, D] of the model named by `fingerprint`."""

    fingerprint: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class FunctionEncoder:
    """A QueryEncoder from a plain function."""

    fn: Callable[[list[str]], np.ndarray]
    fingerprint: str

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.fn(texts)


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10  # videos returned (and caption matches, in text and hybrid modes)
    mode: SearchMode = "vector"
    threshold: float | None = None  # minimum cosine similarity of a moment
    category: str | None = None  # only videos of this category
    index: IndexKind = "auto"  # "auto"/"faiss": segments' persisted indexes where they have one; "exact": none
    fuse: bool = True  # hybrid: order hits by reciprocal rank fusion of vector and caption rankings
    moments_per_video: int = 3
    rrf_k: int = RRF_K
    min_confidence: float | None = None  # minimum confidence of a moment, in [0, 1]
    exclude_video: str | None = None  # never return this video (more like one of its moments)


@dataclass(frozen=True)
class Moment:
    start: float | None  # seconds; None when the row is a whole video
    end: float | None
    score: float  # cosine similarity with the query
    thumbnail: str | None
    confidence: float = 0.0  # in [0, 1], see confidence_of


@dataclass
class VideoHit:
    video_id: str
    score: float | None  # the best moment's score
    category: str | None
    thumbnail: str | None  # the best moment's
    moments: list[Moment]  # best first, at most moments_per_video
    matched_moments: int  # the video's moments among the retrieved rows that pass the threshold
    text_match: bool = False  # hybrid: one of its captions contains the query
    fused_score: float | None = None  # hybrid with fuse: the RRF score hits are ordered by
    confidence: float | None = None  # its best moment's; None without moments

    @property
    def confidence_label(self) -> ConfidenceLabel | None:
        return None if self.confidence is None else confidence_label(self.confidence)


@dataclass(frozen=True)
class TextMatch:
    video_id: str
    category: str | None
    captions: list[str]  # the captions that contain the query


@dataclass
class SearchResult:
    query: str
    mode: SearchMode
    hits: list[VideoHit]
    text_matches: list[TextMatch]
    store_version: int
    index: str | None  # "exact", "ivf-pq+rerank", "ivf-pq+rerank+exact" (see index.py); None in text mode
    cached_query: bool  # the query vector came from the cache
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def confident(self) -> bool:
        """The best-scoring hit's confidence reaches CONFIDENT (else the hits are only the nearest there is)."""
        scored = [hit for hit in self.hits if hit.score is not None and hit.confidence is not None]
        return bool(scored) and max(scored, key=lambda hit: hit.score).confidence >= CONFIDENT

    def count_stages(self, **milliseconds: float) -> SearchResult:
        """Add what ran before the search (an example's `decode`, `encode`, in ms) to `timings_ms` and its total."""
        for name, ms in milliseconds.items():
            self.timings_ms[name] = round(ms, 3)
        self.timings_ms["total"] = round(self.timings_ms.get("total", 0.0)
                                         + sum(self.timings_ms[name] for name in milliseconds), 3)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (hits with their `confidence_label`, and `confident`)."""
        result = dataclasses.asdict(self)
        for hit, values in zip(self.hits, result["hits"]):
            values["confidence_label"] = hit.confidence_label
        result["confident"] = self.confident
        return result


def confidence_of(z: np.ndarray) -> np.ndarray:
    """z-scores over a row's null distribution → confidence in [0, 1]: a logistic, 0.5 at NULL_Z_MIDPOINT."""
    return 1.0 / (1.0 + np.exp(np.clip(NULL_Z_MIDPOINT - np.asarray(z, dtype=np.float64), -60.0, 60.0)))


CLOSE_SHORTFALL = 0.12  # a hit's shortfall from the best, as a share of the best's reach, where closeness is 0.5
CLOSE_WIDTH = 0.01  # how fast closeness falls around it (fitted on the demo, docs/contracts.md)


@dataclass(frozen=True)
class Best:
    """The best row a search returned (after its filters): its cosine and its reach, how far that stands above the
    row's own null mean."""

    score: float
    reach: float

    @classmethod
    def of(cls, scores: np.ndarray, null_means: np.ndarray) -> Best | None:
        if len(scores) == 0:
            return None
        top = int(np.argmax(scores))
        return cls(float(scores[top]), float(scores[top] - null_means[top]))


def closeness(scores: np.ndarray, best: Best | None) -> np.ndarray:
    """How near each cosine is to the best hit's, in [0, 1]: 1 for the best itself, a logistic in the shortfall
    (best − cosine) / reach that is 0.5 at CLOSE_SHORTFALL. A confidence is the null's times this, so a hit far
    below a good best is not called a good match too. 1 everywhere when there is no best or it does not stand
    above its null (reach ≤ 0: nothing is confident then anyway)."""
    scores = np.asarray(scores, dtype=np.float64)
    if best is None or best.reach <= 0:
        return np.ones_like(scores)
    shortfall = np.maximum(best.score - scores, 0.0) / best.reach

    def logistic(x):
        return 1.0 / (1.0 + np.exp(np.clip((x - CLOSE_SHORTFALL) / CLOSE_WIDTH, -60.0, 60.0)))

    return logistic(shortfall) / logistic(0.0)


def confidence_label(confidence: float) -> ConfidenceLabel:
    return "high" if confidence >= HIGH_CONFIDENCE else "medium" if confidence >= CONFIDENT else "low"


class Searcher:
    """Searches one store with one encoder; keeps the query-vector cache and follows newly published versions."""

    def __init__(self, store: Store, encoder: QueryEncoder | None, *, array: str = "video_feature",
                 cache_size: int = 1024):
        if encoder is not None:
            store.check_fingerprint(encoder.fingerprint)
        self.store, self.encoder, self.array = store, encoder, array
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._null_bank: np.ndarray | None = None  # NULL_CAPTIONS encoded, on first use

    @classmethod
    def open(cls, path: str | Path, encoder: QueryEncoder | None, **kwargs: Any) -> Searcher:
        return cls(Store.open(path), encoder, **kwargs)

    def refresh(self) -> bool:
        """Switch to the store's latest published version if it changed; True when it did."""
        prepared = self.prepare_latest()
        if prepared is None:
            return False
        self.use(prepared)
        return True

    def prepare_latest(self) -> Store | None:
        """The store's latest version, opened and made ready to search, or None when the current one is the latest.

        Opening reuses the segments the current version holds (they never change); what is new is read here (row
        metadata, persisted vector indexes), so a server can do it beside its requests and then swap at once (`use`).
        Nothing is built: a new version that adds a small segment is ready in milliseconds.
        """
        if read_manifest(self.store.path)["version"] == self.store.version:
            return None
        store = Store.open(self.store.path)
        if self.encoder is not None:
            store.check_fingerprint(self.encoder.fingerprint)
        if self.array in store.schema:
            index_for(store, self.array)
        store.videos()
        return store

    def use(self, store: Store) -> None:
        """Search `store` from now on (a version `prepare_latest` returned)."""
        self.store = store

    def search(self, query: str, options: SearchOptions = SearchOptions()) -> SearchResult:
        if options.mode not in ("vector", "text", "hybrid"):
            raise ValueError(f"mode {options.mode!r}: one of vector, text, hybrid")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        hits: list[VideoHit] = []
        text_matches: list[TextMatch] = []
        index_kind, cached = None, False
        if options.mode in ("text", "hybrid"):
            text_matches = _timed(timings, "text", lambda: self.text_matches(query, options))
        if options.mode in ("vector", "hybrid"):
            self.store.check_files()
            vector, cached = _timed(timings, "encode", lambda: self.encode(query))
            index = index_for(self.store, self.array, options.index)
            null = self._caption_bank()
            hits, best = _timed(timings, "vector", lambda: self._vector_hits(index, vector, null, options))
            index_kind = index.kind
        if options.mode == "hybrid":
            hits = self._hybrid(hits, text_matches, vector, null, options, best)
        timings["total"] = (time.perf_counter() - started) * 1e3
        return SearchResult(query, options.mode, hits, text_matches, self.store.version, index_kind, cached,
                            {name: round(ms, 3) for name, ms in timings.items()})

    def search_example(self, vector: np.ndarray, options: SearchOptions = SearchOptions(), *,
                       query: str) -> SearchResult:
        """Vector search with a vector of the video space [D] as the query (an image's, a stored moment's); `query`
        names it in the result. Confidence against the stored vectors of rows spread over the store."""
        if options.mode != "vector":
            raise ValueError(f"mode {options.mode!r}: an example query searches vectors only (mode vector)")
        started = time.perf_counter()
        self.store.check_files()
        vector = l2_normalised(np.asarray(vector, dtype=np.float32)[None])[0]
        index = index_for(self.store, self.array, options.index)
        store = self.store
        rows = np.unique(np.linspace(0, len(store) - 1, min(NULL_EXAMPLE_ROWS, len(store))).astype(np.int64))
        null = l2_normalised(stored_vectors(store, self.array, rows))
        timings: dict[str, float] = {}
        hits, _ = _timed(timings, "vector", lambda: self._vector_hits(index, vector, null, options))
        timings["total"] = (time.perf_counter() - started) * 1e3
        return SearchResult(query, "vector", hits, [], store.version, index.kind, False,
                            {name: round(ms, 3) for name, ms in timings.items()})

    def similar(self, video_id: str, start: float | None = None,
                options: SearchOptions = SearchOptions()) -> SearchResult | None:
        """More like one moment: its own stored vector as the query (no model call), its own video excluded. The
        moment is the video's row whose span holds `start` (its first row without one); None when there is none."""
        row = moment_row(self.store, video_id, start)
        if row is None:
            return None
        vector = stored_vectors(self.store, self.array, np.array([row]))[0]
        at = "" if start is None else f" at {start:g} s"
        return self.search_example(vector, dataclasses.replace(options, exclude_video=video_id),
                                   query=f"like {video_id}{at}")

    def encode(self, query: str) -> tuple[np.ndarray, bool]:
        """The query's vector [D] and whether it came from the cache."""
        if self.encoder is None:
            raise ValueError("vector and hybrid search need a text encoder; text mode works without one")
        key = query.strip()
        with self._lock:
            if key in self._vectors:
                self._vectors.move_to_end(key)
                return self._vectors[key], True
        vector = l2_normalised(np.asarray(self.encoder.encode([key]), dtype=np.float32))[0]
        with self._lock:
            self._vectors[key] = vector
            while len(self._vectors) > self._cache_size:
                self._vectors.popitem(last=False)
        return vector, False

    def _caption_bank(self) -> np.ndarray:
        """NULL_CAPTIONS encoded [B, D] (once)."""
        if self._null_bank is None:
            self._null_bank = l2_normalised(np.asarray(self.encoder.encode(list(NULL_CAPTIONS)), dtype=np.float32))
        return self._null_bank

    def confidences(self, scores: np.ndarray, rows: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confidence of each (cosine, store row) against the null bank `null` [B, D] — the cosine's z-score over
        that row's cosines with the bank, through `confidence_of` — and each row's null mean (for `reach`)."""
        null_scores = _exact_scores(self.store, self.array, rows, null)
        mean = null_scores.mean(axis=0)
        return confidence_of((scores - mean) / np.maximum(null_scores.std(axis=0), 1e-6)), mean

    def text_matches(self, query: str, options: SearchOptions) -> list[TextMatch]:
        """Videos with a caption containing the query (case-insensitive), most matching captions first."""
        needle = query.strip().casefold()
        if not needle:
            return []
        matches = []
        for video_id, info in self.store.videos().items():
            captions = [c for c in info.captions if needle in c.casefold()]
            if captions and options.category in (None, info.category):
                matches.append(TextMatch(video_id, info.category, captions))
        matches.sort(key=lambda match: -len(match.captions))
        return matches[: options.k]

    def _vector_hits(self, index: Any, vector: np.ndarray, null: np.ndarray,
                     options: SearchOptions) -> tuple[list[VideoHit], Best | None]:
        """Top rows grouped into videos, and the best row among those the filters let through; widens the candidate
        rows until k videos pass the filters."""
        total = len(index)
        candidates = min(total, max(10 * options.k, 100))
        while True:
            scores, rows = index.search(vector[None], candidates)
            hits, best = self._group(scores[0], rows[0], null, options)
            below = options.threshold is not None and len(scores[0]) and scores[0][-1] < options.threshold
            if len(hits) >= options.k or candidates >= total or below:
                return hits[: options.k], best
            candidates = min(total, 4 * candidates)

    def _group(self, scores: np.ndarray, rows: np.ndarray, null: np.ndarray,
               options: SearchOptions) -> tuple[list[VideoHit], Best | None]:
        videos = self.store.videos()
        keep = rows >= 0
        if options.threshold is not None:
            keep &= scores >= options.threshold
        scores, rows = scores[keep], rows[keep]
        table = self.store.rows.take(rows)
        wanted = [i for i, video_id in enumerate(table["video_id"])
                  if options.category in (None, videos[video_id].category) and video_id != options.exclude_video]
        scores, rows = scores[wanted], rows[wanted]
        table = {name: [values[i] for i in wanted] for name, values in table.items()}
        confidences, null_means = self.confidences(scores, rows, null)
        best = Best.of(scores, null_means)
        confidences = confidences * closeness(scores, best)
        moments: dict[str, list[Moment]] = {}
        for i in range(len(scores)):
            if options.min_confidence is not None and confidences[i] < options.min_confidence:
                continue
            video_id = table["video_id"][i]
            moments.setdefault(video_id, []).append(Moment(table["start"][i], table["end"][i], float(scores[i]),
                                                           table["thumbnail"][i], float(confidences[i])))
        return [_video_hit(video_id, videos[video_id].category, found, len(found), options)
                for video_id, found in moments.items()], best

    def _hybrid(self, hits: list[VideoHit], matches: list[TextMatch], vector: np.ndarray, null: np.ndarray,
                options: SearchOptions, best: Best | None) -> list[VideoHit]:
        matched = {match.video_id for match in matches}
        for hit in hits:
            hit.text_match = hit.video_id in matched
        if not options.fuse:
            return hits
        fused = reciprocal_rank_fusion([[h.video_id for h in hits], [m.video_id for m in matches]], options.rrf_k)
        by_id = {hit.video_id: hit for hit in hits}
        result = []
        for video_id, score in list(fused.items())[: options.k]:
            hit = by_id.get(video_id) or self._caption_only_hit(video_id, vector, null, options, best)
            hit.fused_score = score
            result.append(hit)
        return result

    def _caption_only_hit(self, video_id: str, vector: np.ndarray, null: np.ndarray,
                          options: SearchOptions, best: Best | None) -> VideoHit:
        """A hit for a video found only by its captions: its moments scored exactly, none counted as matched; their
        closeness is to the vector hits' best (or to its own best moment when there were none)."""
        rows = self.store.rows_of(video_id)
        scores = _exact_scores(self.store, self.array, rows, vector)
        confidences, null_means = self.confidences(scores, rows, null)
        confidences = confidences * closeness(scores, best or Best.of(scores, null_means))
        table = self.store.rows.take(rows)
        moments = [Moment(start, end, score, thumbnail, confidence) for score, confidence, start, end, thumbnail in
                   sorted(zip(scores.tolist(), confidences.tolist(), table["start"], table["end"],
                              table["thumbnail"]), key=lambda item: -item[0])]
        hit = _video_hit(video_id, self.store.videos()[video_id].category, moments, 0, options)
        hit.text_match = True
        return hit


def _video_hit(video_id: str, category: str | None, moments: list[Moment], matched: int,
               options: SearchOptions) -> VideoHit:
    """A video's hit from its moments, best first."""
    best = moments[0] if moments else None
    return VideoHit(video_id, best and best.score, category, best and best.thumbnail,
                    moments[: options.moments_per_video], matched,
                    confidence=best.confidence if best else None)


def moment_row(store: Store, video_id: str, start: float | None) -> int | None:
    """Store position of the video's row whose span [start, end) holds `start` (a whole-video row holds any; the
    last row also holds its end); its first row when `start` is None; None for an unknown video or time."""
    rows = store.rows_of(video_id)
    if not len(rows):
        return None
    if start is None:
        return int(rows[0])
    table = store.rows.take(rows)
    spans = list(zip(rows.tolist(), table["start"], table["end"]))
    for row, begin, end in spans:
        if begin is None or begin <= start < end or (row == spans[-1][0] and start == end):
            return row
    return None


def stored_vectors(store: Store, array: str, rows: np.ndarray) -> np.ndarray:
    """The stored vectors [len(rows), D] at store positions `rows`, read segment by segment."""
    parts = [(rows >= s.offset) & (rows < s.offset + s.live_rows) for s in store.segments]
    width = store.segments[0].array(array).shape[1]
    vectors = np.empty((len(rows), width), dtype=np.float32)
    for segment, inside in zip(store.segments, parts):
        if inside.any():
            vectors[inside] = segment.array(array)[segment.locals_of(rows[inside])]
    return vectors


def _exact_scores(store: Store, array: str, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosines of the query vector(s) ([D], or [Q, D] → [Q, len(rows)]) with the rows at store positions `rows`."""
    if not len(rows):
        return np.empty((len(vectors), 0) if vectors.ndim == 2 else (0,), dtype=np.float32)
    stored = stored_vectors(store, array, rows)
    scores = np.atleast_2d(vectors) @ stored.T / np.maximum(np.linalg.norm(stored, axis=1), 1e-12)
    return (scores if vectors.ndim == 2 else scores[0]).astype(np.float32, copy=False)


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Σ 1 / (k + rank) over the rankings (rank 1 = best); ids ordered by fused score, first-seen order on ties."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return dict(sorted(scores.items(), key=lambda pair: -pair[1]))


def search(store: Store, query: str, encoder: QueryEncoder | None,
           options: SearchOptions = SearchOptions()) -> SearchResult:
    """One-off search (no query cache kept between calls: long-lived callers keep a `Searcher`)."""
    return Searcher(store, encoder).search(query, options)


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = fn()
    timings[name] = (time.perf_counter() - started) * 1e3
    return result
