"""ONNX Runtime (fp32 and int8) against PyTorch eager, in the same run with the same thread count.

ViT-B/32 with random weights (plain CLIP + meanP, 12 frames a video), exported once by `vidsearch.model.export`
(int8: ONNX Runtime's dynamic quantisation of the same towers):
- query encoding p50 of one ~10-word query: PyTorch eager as `vidsearch search` runs it today (QueryTextTower,
  stopping at the end-of-text token), ONNX fp32, ONNX int8; queries interleaved, each a new text;
- video encoding frames/s: batches of 12-frame videos (224² uint8 frames, preprocessing included);
- end-to-end search p50 at 10 k rows (exact) through `Searcher` with each encoder (bench search's store and queries);
- with --static: the video tower also with static int8 quantisation (QDQ, per-channel weights, activations calibrated
  on one random 12-frame video of another seed: noise, so its accuracy on real frames is not what this measures);
- with --demo: the demo library's held-out captions searched with the int8 demo model against fp32 (top-10 agreement,
  both indexing and queries through int8) and the share of top hits with the caption's colour, shape and direction;
- with --install: the core install (`pip install .`) and the full one (`.[train]`) into fresh venvs: seconds, MB.
Summary ratio: PyTorch eager / ONNX int8 query encoding p50.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidsearch.bench.common import emit, log, percentile, summary
from vidsearch.bench.search import SEED_ROWS, clustered_vectors, measure_searcher, query_texts, timed
from vidsearch.config import ModelConfig
from vidsearch.model.export import export_model
from vidsearch.model.videoclip import VideoTextModel, create_model
from vidsearch.runtime.exported import ExportedModel, is_exported_dir, read_exported_config
from vidsearch.store import store as feature_store
from vidsearch.store.indexer import ModelQueryEncoder, intra_op_threads
from vidsearch.store.search import Searcher
from vidsearch.store.store import Store

FRAMES = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, PyTorch and ONNX Runtime alike")
    parser.add_argument("--queries", type=int, help="timed queries per encoder (default 100; --quick 20)")
    parser.add_argument("--videos", type=int, default=4, help="videos per encoding batch")
    parser.add_argument("--batches", type=int, help="timed video batches per encoder (default 5; --quick 2)")
    parser.add_argument("--workdir", type=Path, help="keeps the exported ViT-B/32 between runs (default: temporary)")
    parser.add_argument("--static", action="store_true", help="also the video tower with static int8 quantisation")
    parser.add_argument("--demo", action="store_true", help="int8 against fp32 on the demo's held-out captions")
    parser.add_argument("--install", action="store_true", help="time and size the core and full installs")


def run(args: argparse.Namespace) -> None:
    args.queries = args.queries or (20 if args.quick else 100)
    args.batches = args.batches or (2 if args.quick else 5)
    torch.manual_seed(0)
    model = create_model(ModelConfig(num_frames=FRAMES)).eval()
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-runtime-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        exported = {precision: ExportedModel(path, text_threads=args.threads, video_threads=args.threads)
                    for precision, path in exports(model, workdir).items()}
        queries = query_encoding(model, exported, args)
        videos = video_encoding(model, exported, args, workdir)
        search = end_to_end_search(model, exported, workdir, args)
        demo = demo_int8(workdir) if args.demo else None
        install = {spec: install_cost(spec, Path(scratch)) for spec in ("core", "full")} if args.install else None
    ratio = queries["pytorch"]["p50_ms"] / queries["onnx_int8"]["p50_ms"]
    summary("runtime", ratio, baseline="PyTorch eager query encoding", threads=args.threads,
            query_p50_ms={name: q["p50_ms"] for name, q in queries.items()},
            video_frames_per_s={name: v["frames_per_s"] for name, v in videos.items()},
            search_p50_ms_10k=search, demo=demo, install=install)


def exports(model: VideoTextModel, workdir: Path) -> dict[str, Path]:
    """fp32 and int8 exports of `model` in workdir (reused when they are this model's)."""
    paths = {"fp32": workdir / "vit-b-32-fp32", "int8": workdir / "vit-b-32-int8"}
    for precision, path in paths.items():
        if is_exported_dir(path) and read_exported_config(path)["source_fingerprint"] == model.fingerprint:
            continue
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        export_model(model, path, int8=precision == "int8", towers_from=paths["fp32"] if precision == "int8" else None)
        emit({"bench": "runtime", "measure": "export", "precision": precision,
              "seconds": round(time.perf_counter() - started, 1),
              "mb": round(sum(f.stat().st_size for f in path.iterdir()) / 2**20, 1)})
    return paths


def query_encoding(model: VideoTextModel, exported: dict[str, ExportedModel], args: argparse.Namespace) -> dict:
    encoders = {"pytorch": ModelQueryEncoder(model, threads=args.threads),
                **{f"onnx_{precision}": encoder for precision, encoder in exported.items()}}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encoder in encoders.values():
        encoder.encode(["warm-up query"])
    for text in query_texts(args.queries, offset=500_000):
        for name, encoder in encoders.items():
            times[name].append(timed(lambda: encoder.encode([text])))
    reference = encoders["pytorch"].encode(query_texts(20))
    result = {}
    for name, encoder in encoders.items():
        cosine = float((encoder.encode(query_texts(20)) * reference).sum(axis=1).min())
        result[name] = {"p50_ms": round(percentile(times[name], 50), 2), "p95_ms": round(percentile(times[name], 95), 2),
                        "min_cosine_to_pytorch": round(cosine, 6)}
        emit({"bench": "runtime", "measure": "query encoding", "encoder": name, **result[name], "queries": args.queries})
    return result


def video_encoding(model: VideoTextModel, exported: dict[str, ExportedModel], args: argparse.Namespace,
                   workdir: Path) -> dict:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(args.videos, FRAMES, 224, 224, 3), dtype=np.uint8)
    mask = np.ones((args.videos, FRAMES), dtype=bool)

    def pytorch() -> np.ndarray:
        with torch.inference_mode(), intra_op_threads(args.threads):
            return model.encode_video(model.preprocess_frames(torch.from_numpy(frames)), torch.from_numpy(mask)).numpy()

    encoders = {"pytorch": pytorch, **{f"onnx_{p}": (lambda e=e: e.encode_videos(frames, mask)) for p, e in exported.items()}}
    if args.static:
        session = statically_quantised_video_tower(exported["fp32"], workdir, threads=args.threads)
        inputs = {"frames": exported["fp32"].preprocess(frames), "mask": mask}
        encoders["onnx_int8_static"] = lambda: session.run(None, inputs)[0]
    reference = pytorch()
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.batches):
        for name, encode in encoders.items():
            times[name].append(timed(encode) / 1e3)
    result = {}
    for name, encode in encoders.items():
        seconds = percentile(times[name], 50)
        cosine = float((encode() * reference).sum(axis=1).min())
        result[name] = {"frames_per_s": round(args.videos * FRAMES / seconds, 2), "batch_s": round(seconds, 3),
                        "min_cosine_to_pytorch": round(cosine, 6)}
        emit({"bench": "runtime", "measure": "video encoding", "encoder": name, **result[name],
              "videos_per_batch": args.videos, "frames_per_video": FRAMES})
    return result


def statically_quantised_video_tower(fp32: ExportedModel, workdir: Path, *, threads: int):
    """A session of the fp32 video tower quantised statically (QDQ), calibrated on one random video (seed 1)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vidsearch.runtime.sessions import inference_session

    path = workdir / f"video-static-int8-{fp32.fingerprint[:12]}.onnx"
    if not path.is_file():
        frames = np.random.default_rng(1).integers(0, 256, size=(1, FRAMES, 224, 224, 3), dtype=np.uint8)
        batches = iter([{"frames": fp32.preprocess(frames), "mask": np.ones((1, FRAMES), dtype=bool)}])

        class Calibration(CalibrationDataReader):
            def get_next(self) -> dict | None:
                return next(batches, None)

        started = time.perf_counter()
        quantize_static(fp32.directory / "video.onnx", path, Calibration(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=["MatMul", "Conv", "Gemm"])
        emit({"bench": "runtime", "measure": "static quantisation", "seconds": round(time.perf_counter() - started, 1),
              "mb": round(path.stat().st_size / 2**20, 1)})
    return inference_session(path, threads=threads)


def end_to_end_search(model: VideoTextModel, exported: dict[str, ExportedModel], workdir: Path,
                      args: argparse.Namespace) -> dict:
    """`Searcher` p50 over the same 10 k vectors, one store per fingerprint."""
    vectors = clustered_vectors(SEED_ROWS, seed=SEED_ROWS)
    encoders = {"pytorch": ModelQueryEncoder(model, threads=args.threads),
                **{f"onnx_{precision}": encoder for precision, encoder in exported.items()}}
    result = {}
    for number, (name, encoder) in enumerate(encoders.items()):
        path = workdir / f"store-{name}"
        shutil.rmtree(path, ignore_errors=True)
        feature_store.write(path, {"video_feature": vectors}, fingerprint=encoder.fingerprint)
        measured = measure_searcher(Searcher(Store.open(path), encoder),
                                    query_texts(args.queries, offset=600_000 + 10_000 * number), "exact")
        result[name] = measured["p50_ms"]
        emit({"bench": "runtime", "measure": "search at 10k", "encoder": name, **measured})
    return result


def demo_int8(workdir: Path) -> dict:
    """The demo library indexed and searched with the int8 demo model against the shipped fp32 one."""
    from vidsearch.bench.demo import _accuracy
    from vidsearch.demo import SHIPPED_CHECKPOINT, SHIPPED_EXPORTED, held_out_captions, prepare_demo
    from vidsearch.model.checkpoint import load_checkpoint
    from vidsearch.model.source import ModelSource
    from vidsearch.store.indexer import index_cache, open_searcher
    from vidsearch.store.search import SearchOptions

    report = prepare_demo(workdir=workdir / "demo")
    int8 = workdir / "demo-int8"
    if not is_exported_dir(int8):
        export_model(load_checkpoint(SHIPPED_CHECKPOINT), int8, int8=True, towers_from=SHIPPED_EXPORTED)
    store = workdir / "demo-int8-store"
    shutil.rmtree(store, ignore_errors=True)
    source = ModelSource(exported=str(int8))
    index_cache(model=source.load(), source=source, cache_dir=report.paths.cache, store_dir=store)
    fp32, quantised = open_searcher(report.paths.store), open_searcher(store)
    options = SearchOptions(k=10, index="exact")
    overlap = []
    for caption, _ in held_out_captions(report.paths):
        tops = [{hit.video_id for hit in searcher.search(caption, options).hits} for searcher in (fp32, quantised)]
        overlap.append(len(tops[0] & tops[1]) / 10)
    top_hit = lambda searcher: lambda caption: next((h.video_id for h in searcher.search(caption, options).hits), None)  # noqa: E731
    result = {"top10_agreement": round(float(np.mean(overlap)), 4), "queries": len(overlap),
              "accuracy_int8": _accuracy(report.paths, top_hit(quantised))["all"],
              "accuracy_fp32": _accuracy(report.paths, top_hit(fp32))["all"]}
    emit({"bench": "runtime", "measure": "demo int8 against fp32", **result})
    return result


def install_cost(spec: str, scratch: Path) -> dict:
    """Seconds and size of `pip install` of this source tree (core, or with the train extra) into a fresh venv."""
    source = Path(__file__).resolve().parents[3]
    venv = scratch / f"venv-{spec}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = str(source) + ("[train]" if spec == "full" else "")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    target], check=True)
    seconds = time.perf_counter() - started
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0]
    result = {"seconds": round(seconds, 1), "mb": int(size)}
    emit({"bench": "runtime", "measure": "install", "spec": spec, **result})
    shutil.rmtree(venv, ignore_errors=True)
    return result
