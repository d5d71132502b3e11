"""MSR-VTT as CLIP4Clip distributes it, converted into the manifest: 9k train / 1k-A test.

Files (CLIP4Clip's ``msrvtt_data.zip``):

- ``MSRVTT_data.json``: ``videos`` [{``video_id``, ``category`` (0–19), ...}] and ``sentences``
  [{``video_id``, ``caption``, ...}], 20 captions per video;
- ``MSRVTT_train.9k.csv``: one column ``video_id``, the 9 000 training videos (all their captions are used);
- ``MSRVTT_JSFUSION_test.csv``: columns ``key,vid_key,video_id,sentence``, the 1 000 test videos of split 1k-A, each
  with the one JSFUSION sentence that is its only query.

The videos are ``{videos_dir}/{video_id}.mp4``. MSR-VTT has no validation split of its own: `val_videos` moves that
many training videos, chosen by `seed`, into ``val`` so that model selection never looks at the test split.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import defaultdict
from pathlib import Path

from vidsearch.data.manifest import ManifestError, VideoRecord, relative_source

log = logging.getLogger(__name__)

# MSR-VTT's category.txt, in index order.
CATEGORIES = (
    "music", "people", "gaming", "sports/actions", "news/events/politics", "education", "tv shows", "movie/comedy",
    "animation", "vehicles/autos", "howto", "travel", "science/technology", "animals/pets", "kids/family",
    "documentary", "food/drink", "cooking", "beauty/fashion", "advertisement",
)


def convert_msrvtt(
    *,
    data_json: str | Path,
    train_csv: str | Path,
    test_csv: str | Path,
    videos_dir: str | Path,
    manifest_dir: str | Path,
    val_videos: int = 0,
    seed: int = 0,
) -> list[VideoRecord]:
    """Manifest records for the 9k training videos (all captions) and the 1k-A test videos (JSFUSION sentence)."""
    captions, categories = _read_data_json(Path(data_json))
    train_ids = _read_column(Path(train_csv), "video_id")
    test_sentences = _read_test_csv(Path(test_csv))
    val_ids = _choose_val(train_ids, count=val_videos, seed=seed)

    def record(video_id: str, texts: list[str], split: str) -> VideoRecord:
        source = relative_source(Path(videos_dir) / f"{video_id}.mp4", manifest_dir)
        return VideoRecord(video_id=video_id, source=source, captions=tuple(texts), split=split,
                           category=categories.get(video_id))

    train = [record(vid, _captions_of(captions, vid, where=train_csv), "val" if vid in val_ids else "train")
             for vid in train_ids]
    test = [record(vid, [sentence], "test") for vid, sentence in test_sentences.items()]
    log.info("MSR-VTT: %d train, %d val, %d test videos", len(train) - len(val_ids), len(val_ids), len(test))
    return train + test


def _read_data_json(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Captions per video (in file order) and each video's category name."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or "sentences" not in data or "videos" not in data:
        raise ManifestError(f"{path}: expected an object with 'sentences' and 'videos' (MSRVTT_data.json)")
    captions: dict[str, list[str]] = defaultdict(list)
    for sentence in data["sentences"]:
        captions[sentence["video_id"]].append(sentence["caption"].strip())
    categories = {video["video_id"]: _category_name(video.get("category")) for video in data["videos"]}
    return captions, categories


def _category_name(index: object) -> str | None:
    if isinstance(index, int) and 0 <= index < len(CATEGORIES):
        return CATEGORIES[index]
    return None if index is None else str(index)


def _read_column(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or ()):
            raise ManifestError(f"{path}:1: expected a column {column!r}, found {reader.fieldnames}")
        return [row[column].strip() for row in reader]


def _read_test_csv(path: Path) -> dict[str, str]:
    """video_id → its JSFUSION sentence."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"video_id", "sentence"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}:1: expected columns key,vid_key,video_id,sentence; missing {sorted(missing)}")
        sentences = {}
        for row in reader:
            if row["video_id"] in sentences:
                raise ManifestError(f"{path}:{reader.line_num}: video {row['video_id']!r} appears twice")
            sentences[row["video_id"]] = row["sentence"].strip()
        return sentences


def _captions_of(captions: dict[str, list[str]], video_id: str, *, where: str | Path) -> list[str]:
    if not captions.get(video_id):
        raise ManifestError(f"{where}: video {video_id!r} has no sentences in MSRVTT_data.json")
    return captions[video_id]


def _choose_val(train_ids: list[str], *, count: int, seed: int) -> set[str]:
    if count < 0 or (count and count >= len(train_ids)):
        raise ManifestError(f"val_videos must be between 0 and {len(train_ids) - 1}, got {count}")
    return set(random.Random(seed).sample(sorted(train_ids), count))
