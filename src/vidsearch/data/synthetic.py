"""The moving-shapes library: a captioned video library a model can learn from scratch (docs/architecture.md, "The synthetic library").

Each clip shows one coloured shape moving in a straight line (left, right, up or down) over a dark, lightly textured
background that does not change over time. Every clip has a time-reversed twin: the same frames in reverse order,
captioned with the opposite direction. A twin pair holds one set of frames, so mean pooling over frames cannot tell
the two apart and only temporal modelling can.

The renderer is pure numpy (`render_clip`), so a training loop can stream fresh clips without touching the disk:

    rng = np.random.default_rng(0)
    spec = random_spec(rng)
    frames = render_clip(spec, frames=8, size=64)          # uint8 [8, 64, 64, 3]
    twin = render_clip(spec.twin(), frames=8, size=64)     # == frames[::-1]
    texts = captions_for(spec, np.random.default_rng(1))   # the twin's: captions_for(spec.twin(), same seed)

`generate_library` writes ``DIR/videos/synNNNNNa.mp4`` / ``synNNNNNb.mp4`` (a pair of twins) as real H.264 files and
``DIR/manifest.jsonl``, where each record names its twin in the ``twin`` field and twins share a split.
`parse_caption` maps any caption of this vocabulary back to (colour, shape, direction) for scoring benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidsearch.data.manifest import VideoRecord, save_manifest
from vidsearch.video.encode import write_video

log = logging.getLogger(__name__)

# --- vocabulary ------------------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (240, 220, 40), "purple": (170, 60, 220), "orange": (250, 140, 20),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge"),
    "star": ("star", "starburst"),
    "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"),
}
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "leftwards", "towards the left edge"),
    "right": ("to the right", "rightwards", "towards the right edge"),
    "up": ("up", "upwards", "towards the top"),
    "down": ("down", "downwards", "towards the bottom"),
}
VERBS = ("moves", "slides", "travels", "glides", "drifts")
TEMPLATES = (
    "a {colour} {shape} {verb} {direction}",
    "the {colour} {shape} {verb} {direction}",
    "a {colour} {shape} {verb} {direction} over a dark background",
    "a {shape} coloured {colour} {verb} {direction}",
    "a {colour} {shape} that {verb} {direction}",
)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.2}


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip: everything `render_clip` needs, in units of the frame size so that any size renders alike.

    The shape travels from `start` along `motion` by `travel`; `reversed` plays the clip backwards, which makes the
    visible direction the opposite of `motion`.
    """

    colour: str
    shape: str
    motion: str
    start: tuple[float, float]
    travel: float
    radius: float
    background: tuple[int, int, int]
    texture_seed: int
    texture: float
    reversed: bool = False

    @property
    def direction(self) -> str:
        """The direction the shape is seen to move in."""
        return OPPOSITE[self.motion] if self.reversed else self.motion

    def twin(self) -> ClipSpec:
        """The same clip played backwards."""
        return dataclasses.replace(self, reversed=not self.reversed)


def random_spec(rng: np.random.Generator) -> ClipSpec:
    """A random clip: colour, shape and direction uniform; the path stays inside the frame."""
    motion = str(rng.choice(list(_UNIT)))
    travel, radius = float(rng.uniform(0.4, 0.55)), float(rng.uniform(0.09, 0.13))
    along = float(rng.uniform(radius + 0.03, 0.97 - radius - travel))
    across = float(rng.uniform(0.25, 0.75))
    dx, dy = _UNIT[motion]
    begin = along if dx + dy > 0 else 1.0 - along
    start = (begin, across) if dx else (across, begin)
    return ClipSpec(
        colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(list(SHAPE_WORDS))), motion=motion,
        start=start, travel=travel, radius=radius,
        background=tuple(int(v) for v in rng.integers(10, 50, size=3)),
        texture_seed=int(rng.integers(2**31)), texture=float(rng.choice([0.0, 6.0, 12.0])),
    )


# --- rendering -------------------------------------------------------------------------------------------------------


def render_clip(spec: ClipSpec, *, frames: int, size: int) -> np.ndarray:
    """The clip as uint8 RGB frames [frames, size, size, 3]; deterministic for a spec."""
    if frames < 2 or size < 8:
        raise ValueError(f"need at least 2 frames of at least 8 px, got {frames} frames of {size} px")
    clip = np.repeat(_background(spec, size=size)[None], frames, axis=0)
    colour = np.array(COLOURS[spec.colour], dtype=np.uint8)
    dx, dy = _UNIT[spec.motion]
    for index in range(frames):
        step = spec.travel * index / (frames - 1)
        _paint(clip[index], spec, centre=(spec.start[0] + dx * step, spec.start[1] + dy * step), colour=colour)
    return np.ascontiguousarray(clip[::-1]) if spec.reversed else clip


def _paint(frame: np.ndarray, spec: ClipSpec, *, centre: tuple[float, float], colour: np.ndarray) -> None:
    """Paint the shape into `frame`, testing only the pixels near it (every shape lies within 1.1 radii)."""
    size = frame.shape[0]
    reach = spec.radius * 1.2 * size + 1
    cols, rows = (slice(max(0, int(c * size - reach)), min(size, int(c * size + reach) + 1)) for c in centre)
    ys, xs = (np.mgrid[rows, cols] + 0.5) / size
    mask = shape_mask(spec.shape, xs - centre[0], ys - centre[1], spec.radius)
    frame[rows, cols][mask] = colour


def _background(spec: ClipSpec, *, size: int) -> np.ndarray:
    """A dark plain colour with optional static noise (the same in every frame, so twins share all frames)."""
    noise = np.random.default_rng(spec.texture_seed).normal(0.0, spec.texture, size=(size, size, 1))
    return np.clip(np.array(spec.background, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of a shape centred at the origin of the (x, y) offsets (y grows downwards)."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return x * x + y * y <= radius * radius
    if shape == "square":
        return np.maximum(ax, ay) <= radius * 0.85
    if shape == "diamond":
        return ax + ay <= radius * 1.1
    if shape == "cross":
        arm = radius * 0.35
        return (np.maximum(ax, ay) <= radius) & (np.minimum(ax, ay) <= arm)
    if shape == "triangle":  # pointing up: inside the base and both slanted sides
        return (y <= radius * 0.75) & (2.0 * ax <= (y + radius) * 1.15)
    if shape == "star":
        angle = np.arctan2(y, x) + np.pi / 2
        outline = radius * (0.55 + 0.45 * np.abs(np.cos(2.5 * angle)) ** 2)
        return x * x + y * y <= outline * outline
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_WORDS)}")


# --- captions --------------------------------------------------------------------------------------------------------


def captions_for(spec: ClipSpec, rng: np.random.Generator, *, count: int = 5) -> list[str]:
    """`count` different paraphrases of the clip. The choices depend on `rng` only, not on the direction, so the
    same generator state gives a twin the same sentences with the direction words swapped."""
    captions: list[str] = []
    for _ in range(count * 20):
        template, shape_i, verb_i, dir_i = (int(rng.integers(n)) for n in (
            len(TEMPLATES), len(SHAPE_WORDS[spec.shape]), len(VERBS), len(DIRECTION_WORDS["left"])))
        direction = DIRECTION_WORDS[spec.direction][dir_i]
        text = TEMPLATES[template].format(colour=spec.colour, shape=SHAPE_WORDS[spec.shape][shape_i],
                                          verb=VERBS[verb_i], direction=direction)
        if text not in captions:
            captions.append(text)
        if len(captions) == count:
            break
    return captions


def _phrase_table(words: dict[str, tuple[str, ...]]) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, canonical name) for every synonym, longest phrase first so 'to the left' wins over 'left'."""
    pairs = [(phrase, name) for name, phrases in words.items() for phrase in phrases + (name,)]
    pairs.sort(key=lambda pair: -len(pair[0]))
    return [(re.compile(rf"\b{re.escape(phrase)}\b"), name) for phrase, name in pairs]


_COLOUR_PATTERNS = _phrase_table({name: () for name in COLOURS})
_SHAPE_PATTERNS = _phrase_table(SHAPE_WORDS)
_DIRECTION_PATTERNS = _phrase_table(DIRECTION_WORDS)


def parse_caption(text: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, direction) named by a caption, each canonical (e.g. 'ball' → 'circle') or None if absent."""
    text = text.lower()
    return tuple(_first_match(patterns, text) for patterns in (_COLOUR_PATTERNS, _SHAPE_PATTERNS, _DIRECTION_PATTERNS))


def _first_match(patterns: list[tuple[re.Pattern[str], str]], text: str) -> str | None:
    return next((name for pattern, name in patterns if pattern.search(text)), None)


# --- telling the library apart from other footage ------------------------------------------------------------------

SYNTHETIC_ID = re.compile(r"syn\d{5}[ab]")  # the ids (file stems) `generate_library` writes
SYNTHETIC_LIBRARY = "synthetic"  # a checkpoint's extra["training_library"] when it learnt from this library only


def is_synthetic_id(video_id: str) -> bool:
    return SYNTHETIC_ID.fullmatch(video_id) is not None


def is_synthetic_library(records) -> bool:
    """True when every record is a library video: its id one `generate_library` writes, every caption one of ours."""
    return bool(records) and all(
        is_synthetic_id(record.video_id) and all(None not in parse_caption(c) for c in record.captions)
        for record in records)


# --- the library on disk ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LibraryPair:
    """One twin pair as planned before rendering: the forward clip, its split and its captions' generator seed."""

    number: int
    spec: ClipSpec
    split: str
    caption_seed: int


def plan_library(*, videos: int, seed: int) -> list[LibraryPair]:
    """`videos` // 2 twin pairs with their splits (about 70% train, 10% val, 20% test, by pair)."""
    if videos < 2 or videos % 2:
        raise ValueError(f"the library holds twin pairs: need an even number of videos ≥ 2, got {videos}")
    rng = np.random.default_rng(seed)
    pairs = videos // 2
    specs = [random_spec(rng) for _ in range(pairs)]
    caption_seeds = rng.integers(2**31, size=pairs)
    splits = _assign_splits(pairs, rng)
    return [LibraryPair(i, specs[i], splits[i], int(caption_seeds[i])) for i in range(pairs)]


def _assign_splits(pairs: int, rng: np.random.Generator) -> list[str]:
    counts = {name: int(round(pairs * share)) if pairs >= 3 else 0 for name, share in SPLIT_FRACTIONS.items()}
    counts = {name: max(count, 1) if pairs >= 3 else 0 for name, count in counts.items()}
    splits = ["val"] * counts["val"] + ["test"] * counts["test"]
    splits += ["train"] * (pairs - len(splits))
    return [splits[i] for i in rng.permutation(pairs)]


def pair_records(pair: LibraryPair, *, videos_dirname: str = "videos") -> tuple[VideoRecord, VideoRecord]:
    """Manifest records of a pair: ``synNNNNNa`` plays forward, ``synNNNNNb`` is its time-reversed twin."""
    ids = (f"syn{pair.number:05d}a", f"syn{pair.number:05d}b")
    specs = (pair.spec, pair.spec.twin())
    return tuple(
        VideoRecord(video_id=ids[k], source=f"{videos_dirname}/{ids[k]}.mp4", split=pair.split,
                    captions=tuple(captions_for(specs[k], np.random.default_rng(pair.caption_seed))),
                    category=pair.spec.shape, twin=ids[1 - k])
        for k in range(2))


def generate_library(
    out: str | Path, *, videos: int = 300, seed: int = 0, size: int = 96, seconds: float = 8.0, fps: float = 4.0,
) -> Path:
    """Render, encode (H.264) and describe a moving-shapes library in `out`; returns the manifest's path.

    The defaults give 8 s clips of 32 frames: sampled at 1 keyframe per second the shape visibly moves between every
    two keyframes. Sizes must be even (H.264 with 4:2:0 chroma).
    """
    if size % 2:
        raise ValueError(f"size must be even for H.264, got {size}")
    frames = int(round(seconds * fps))
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    records: list[VideoRecord] = []
    for pair in tqdm(plan_library(videos=videos, seed=seed), desc="synth", unit="pair"):
        clip = render_clip(pair.spec, frames=frames, size=size)
        for record, pixels in zip(pair_records(pair), (clip, clip[::-1])):
            write_video(out / record.source, pixels, fps=fps, options={"preset": "ultrafast"})
            records.append(record)
    manifest = save_manifest(records, out / "manifest.jsonl")
    log.info("synthetic library: %d videos in %.1f s → %s", len(records), time.perf_counter() - began, out)
    return manifest
