"""Retrieval metrics from a similarity matrix: R@1, R@5, R@10, MdR, MnR for text→video and video→text.

The matrix is ``sim[caption, video]``: one row per caption (every caption of every evaluated video is a query),
one column per video, and ``caption_video[c]`` is the column of caption c's own video.

Ranks (1 = best) count ties **pessimistically**: a ground truth's rank is 1 + the number of *other* candidates that
score at least as high as it does. A model that gives every video the same score therefore ranks every query last,
never first. (CLIP4Clip's `compute_metrics` reads ranks off a sorted row and keeps one entry per tied position, so a
tie adds a query: on a 3×3 matrix where one query's ground truth ties with one other video it reports R@1 = 75%
over four "queries"; here the same matrix gives R@1 = 2/3 = 66.7%.)

- text→video: each caption ranks its own video among all videos.
- video→text: each video ranks its best-ranked caption among all captions; the other captions of the same video are
  not competitors (rank = 1 + the captions of *other* videos scoring at least its best caption's score). Videos
  without any caption in the matrix are not queries.

R@K are percentages; MdR and MnR are ranks. Large matrices are processed in chunks of rows or columns; the chunk size
changes only memory use, never a result.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

log = logging.getLogger(__name__)

RECALL_AT = (1, 5, 10)
DEFAULT_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class RetrievalMetrics:
    r1: float
    r5: float
    r10: float
    mdr: float
    mnr: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return {"R@1": self.r1, "R@5": self.r5, "R@10": self.r10, "MdR": self.mdr, "MnR": self.mnr,
                "queries": self.queries}


def metrics_from_ranks(ranks: np.ndarray) -> RetrievalMetrics:
    """R@1/5/10 (%), median and mean rank of 1-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0 or ranks.min() < 1:
        raise ValueError("need a non-empty 1-D array of ranks ≥ 1")
    recalls = [float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT]
    return RetrievalMetrics(*recalls, mdr=float(np.median(ranks)), mnr=float(np.mean(ranks)), queries=int(ranks.size))


def _check(sim: np.ndarray, caption_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(sim)
    caption_video = np.asarray(caption_video, dtype=np.int64)
    if sim.ndim != 2 or caption_video.shape != (sim.shape[0],):
        raise ValueError(f"need sim [captions, videos] and caption_video [captions]; got {sim.shape} and "
                         f"{caption_video.shape}")
    if caption_video.size and (caption_video.min() < 0 or caption_video.max() >= sim.shape[1]):
        raise ValueError("caption_video holds a video index outside the matrix")
    return sim, caption_video


def text_to_video_ranks(sim: np.ndarray, caption_video: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Rank of each caption's own video among all videos (ties pessimistic), one per row of `sim`."""
    sim, caption_video = _check(sim, caption_video)
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for begin in range(0, sim.shape[0], chunk):
        rows = np.asarray(sim[begin:begin + chunk], dtype=np.float64)
        _refuse_nan(rows)
        truth = rows[np.arange(rows.shape[0]), caption_video[begin:begin + chunk]]
        # the count includes the ground truth itself, which supplies the 1 of a 1-based rank
        ranks[begin:begin + chunk] = (rows >= truth[:, None]).sum(axis=1)
    return ranks


def video_to_text_ranks(sim: np.ndarray, caption_video: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Rank of each captioned video's best caption among all captions, siblings excluded (ties pessimistic).

    Returned in column order, for the videos that have at least one caption."""
    sim, caption_video = _check(sim, caption_video)
    captioned = np.unique(caption_video)
    ranks = np.empty(captioned.size, dtype=np.int64)
    for begin in range(0, captioned.size, chunk):
        videos = captioned[begin:begin + chunk]
        columns = np.asarray(sim[:, videos], dtype=np.float64)
        _refuse_nan(columns)
        own = caption_video[:, None] == videos[None, :]
        best = np.where(own, columns, -np.inf).max(axis=0)
        above = (columns >= best) & ~own
        ranks[begin:begin + chunk] = 1 + above.sum(axis=0)
    return ranks


def _refuse_nan(block: np.ndarray) -> None:
    if np.isnan(block).any():
        raise ValueError("the similarity matrix holds NaN: ranks would be meaningless")


def retrieval_metrics(sim: np.ndarray, caption_video: np.ndarray, *,
                      chunk: int = DEFAULT_CHUNK) -> dict[str, RetrievalMetrics]:
    """``{"text_to_video": ..., "video_to_text": ...}`` for one similarity matrix."""
    return {
        "text_to_video": metrics_from_ranks(text_to_video_ranks(sim, caption_video, chunk=chunk)),
        "video_to_text": metrics_from_ranks(video_to_text_ranks(sim, caption_video, chunk=chunk)),
    }


def format_table(rows: dict[str, RetrievalMetrics], *, label: str = "model") -> str:
    """A Markdown table in the thesis' layout (§3.5): label | R@1↑ | R@5↑ | R@10↑ | MdR↓ | MnR↓."""
    lines = [f"| {label} | R@1↑ | R@5↑ | R@10↑ | MdR↓ | MnR↓ |", "|---|---|---|---|---|---|"]
    for name, m in rows.items():
        mdr = f"{m.mdr:.0f}" if float(m.mdr).is_integer() else f"{m.mdr:.1f}"
        lines.append(f"| {name} | {m.r1:.1f} | {m.r5:.1f} | {m.r10:.1f} | {mdr} | {m.mnr:.1f} |")
    return "\n".join(lines)
