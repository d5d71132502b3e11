"""ONNX Runtime sessions with a chosen thread count."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def inference_session(path: str | Path, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session for `path`; `threads` intra-op threads (None: ONNX Runtime's default, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
