import os
import types

import pytest

# Tests run on the CPU with few threads: the machine has 2 cores and tests may run beside other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")


# --- the web tests' library (tests/web, tests/e2e) -------------------------------------------------------------------

def _build_web_library(root, *, videos: int):
    """Synthetic videos cut into 2 s moments → keyframe cache → store of the tiny random-weight model."""
    from vidsearch.config import FrameConfig
    from vidsearch.data.manifest import load_manifest
    from vidsearch.data.synthetic import generate_library
    from vidsearch.model.source import ModelSource
    from vidsearch.store.indexer import index_cache
    from vidsearch.video.cache import build_cache

    manifest = generate_library(root / "lib", videos=videos, seed=5, size=64, seconds=8.0, fps=4.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=4, size=64, segment_seconds=2.0),
                workers=1)
    source = ModelSource(backbone="vidsearch-tiny", num_frames=4)
    index_cache(model=source.load(), source=source, cache_dir=root / "cache", store_dir=root / "store",
                records=load_manifest(manifest))
    return types.SimpleNamespace(root=root, store=root / "store", cache=root / "cache", manifest=manifest,
                                 records=load_manifest(manifest))


@pytest.fixture(scope="session")
def make_web_library():
    """Builds a small indexed library in a directory: make_web_library(root, videos=N)."""
    return _build_web_library


@pytest.fixture(scope="session")
def web_library(tmp_path_factory):
    """One library shared by the web tests, which only read it (upload tests build their own)."""
    return _build_web_library(tmp_path_factory.mktemp("web-library"), videos=8)


# --- a small keyframe library through the CLI (tests/data, tests/train) -----------------------------------------------

def _keyframe_library(root, *, videos: int, size: int, seconds: float, frames: int):
    """`vidsearch synth` then `vidsearch frames` into root/lib and root/cache; returns root."""
    from vidsearch.cli import main

    assert main(["synth", "--out", str(root / "lib"), "--videos", str(videos), "--size", str(size),
                 "--seconds", str(seconds)]) == 0
    assert main(["frames", str(root / "lib" / "videos"), "--out", str(root / "cache"), "--frames", str(frames),
                 "--size", str(size), "--workers", "1"]) == 0
    return root


@pytest.fixture(scope="session")
def make_keyframe_library():
    """make_keyframe_library(root, videos=, size=, seconds=, frames=) -> root with lib/ and cache/."""
    return _keyframe_library


# --- torchrun (tests/train, tests/store) ------------------------------------------------------------------------------

def _torchrun(nproc: int, *args: str, timeout: float = 300):
    """`torchrun --nproc-per-node nproc ARGS...`; the finished process (output captured).

    `--standalone`: torchrun's own store binds a port the OS picks and keeps it (no probe-then-bind race with other
    processes picking ports at the same time).
    """
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(nproc), *args]
    return subprocess.run(command, timeout=timeout, capture_output=True, text=True)


@pytest.fixture(scope="session")
def torchrun():
    """torchrun(nproc, *args, timeout=300) -> CompletedProcess: gloo ranks on the CPU, each run on its own port."""
    return _torchrun
