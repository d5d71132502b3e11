"""Re-scoring a similarity matrix at inference time; results are reported raw and post-processed, never mixed.

Dual softmax (DSL, as CLIP4Clip and the thesis use it): ``sim * softmax(sim * 100, dim=0)`` where dim 0 runs over the query
set. It uses the whole query set at once (a caption that fits several videos loses weight on all of them), so it
is an evaluation-time re-scoring, not something a single live query can use.
"""

from __future__ import annotations

import numpy as np

from vidsearch.eval.metrics import (DEFAULT_CHUNK, RetrievalMetrics, metrics_from_ranks, retrieval_metrics,
                                    text_to_video_ranks, video_to_text_ranks)

DSL_SCALE = 100.0


def softmax(values: np.ndarray, *, axis: int) -> np.ndarray:
    """Numerically stable softmax in float64."""
    values = np.asarray(values, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def dual_softmax(sim: np.ndarray, *, axis: int = 0, scale: float = DSL_SCALE) -> np.ndarray:
    """``sim * softmax(sim * scale)`` along `axis`, the axis of the queries (0 for ``sim[caption, video]`` used
    text→video, 1 for the same matrix used video→text)."""
    sim = np.asarray(sim, dtype=np.float64)
    return sim * softmax(sim * scale, axis=axis)


def evaluate_similarity(sim: np.ndarray, caption_video: np.ndarray, *,
                        chunk: int = DEFAULT_CHUNK) -> dict[str, dict[str, RetrievalMetrics]]:
    """``{"raw": {...}, "dsl": {...}}``, each ``{"text_to_video": ..., "video_to_text": ...}``: raw scores, and dual
    softmax taken over the queries of each direction (captions for text→video, videos for video→text)."""
    raw = retrieval_metrics(sim, caption_video, chunk=chunk)
    t2v = metrics_from_ranks(text_to_video_ranks(dual_softmax(sim, axis=0), caption_video, chunk=chunk))
    v2t = metrics_from_ranks(video_to_text_ranks(dual_softmax(sim, axis=1), caption_video, chunk=chunk))
    return {"raw": raw, "dsl": {"text_to_video": t2v, "video_to_text": v2t}}
