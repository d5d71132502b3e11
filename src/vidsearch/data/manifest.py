"""The one data manifest: JSON Lines, one record per video (or per moment of a long video).

Fields (docs/contracts.md, "Data manifest"):

- ``video_id``  unique, non-empty string
- ``source``    path of the video file, relative to the manifest's directory unless absolute
- ``captions``  list of non-empty strings (may be empty for a video that is only searched, never trained or scored)
- ``split``     ``train``, ``val`` or ``test``
- ``category``  string or null
- ``start``, ``end``  seconds of a moment inside ``source``, both null for the whole video
- ``twin``      optional: the ``video_id`` of this video's time-reversed twin (synthetic library); omitted when null

Unknown fields are refused, so a misspelt field is an error rather than silently ignored. Besides the loader and the
writer, this module holds the generic importer for a user's own captioned videos (CSV or JSON Lines).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from vidsearch.fsutil import atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_REQUIRED = ("video_id", "source", "captions", "split")
_OPTIONAL = ("category", "start", "end", "twin")


class ManifestError(ValueError):
    """A manifest or an import file that does not follow the schema; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    video_id: str
    source: str
    captions: tuple[str, ...]
    split: str
    category: str | None = None
    start: float | None = None
    end: float | None = None
    twin: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "captions", tuple(self.captions))
        problem = _record_problem(self)
        if problem:
            raise ValueError(f"video {self.video_id!r}: {problem}")

    def source_path(self, manifest_dir: str | Path) -> Path:
        """The video file: `source` resolved against the manifest's directory."""
        return Path(manifest_dir) / self.source

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["captions"] = list(self.captions)
        if data["twin"] is None:
            del data["twin"]
        return data


def _record_problem(record: VideoRecord) -> str | None:
    """What is wrong with a record's values, or None."""
    if not isinstance(record.video_id, str) or not record.video_id:
        return "video_id must be a non-empty string"
    if not isinstance(record.source, str) or not record.source:
        return "source must be a non-empty string"
    if any(not isinstance(text, str) or not text.strip() for text in record.captions):
        return "captions must be non-empty strings"
    if record.split not in SPLITS:
        return f"split must be one of {', '.join(SPLITS)}, not {record.split!r}"
    if record.category is not None and not isinstance(record.category, str):
        return "category must be a string or null"
    if record.twin is not None and (not isinstance(record.twin, str) or record.twin == record.video_id):
        return "twin must be another video's id"
    return _moment_problem(record.start, record.end)


def _moment_problem(start: Any, end: Any) -> str | None:
    if start is None and end is None:
        return None
    if start is None or end is None:
        return "start and end must be given together"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (start, end)):
        return "start and end must be numbers (seconds)"
    if not 0 <= start < end:
        return f"need 0 <= start < end, got start={start}, end={end}"
    return None


# --- reading and writing ---------------------------------------------------------------------------------------------


def load_manifest(path: str | Path) -> list[VideoRecord]:
    """Read and validate a manifest; any problem raises ManifestError naming the file and line."""
    path = Path(path)
    records: list[VideoRecord] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _parse_line(line, where=f"{path}:{number}")
            if record.video_id in first_line:
                raise ManifestError(f"{path}:{number}: duplicate video_id {record.video_id!r} "
                                    f"(first on line {first_line[record.video_id]})")
            first_line[record.video_id] = number
            records.append(record)
    _check_twins(records, where=str(path))
    return records


def _json_object(line: str, *, where: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{where}: not valid JSON: {error.msg}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _parse_line(line: str, *, where: str) -> VideoRecord:
    data = _json_object(line, where=where)
    missing = [key for key in _REQUIRED if key not in data]
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ManifestError(f"{where}: " + "; ".join(
            ([f"missing field(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    if not isinstance(data["captions"], list):
        raise ManifestError(f"{where}: captions must be a list of strings")
    try:
        return VideoRecord(**data)
    except ValueError as error:
        raise ManifestError(f"{where}: {error}") from None


def _check_twins(records: list[VideoRecord], *, where: str) -> None:
    """A twin must exist, point back, and share the split (so a split never leaks one half of a pair)."""
    by_id = {record.video_id: record for record in records}
    for record in records:
        if record.twin is None:
            continue
        twin = by_id.get(record.twin)
        if twin is None or twin.twin != record.video_id or twin.split != record.split:
            raise ManifestError(f"{where}: video {record.video_id!r}: twin {record.twin!r} must exist, name it back "
                                "and have the same split")


def save_manifest(records: Iterable[VideoRecord], path: str | Path) -> Path:
    """Write records as JSON Lines, atomically (readers see the old file or the new one, never a mix)."""
    path = Path(path)
    records = list(records)
    ids = [record.video_id for record in records]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate video ids in the records to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(record.to_json(), ensure_ascii=False) + "\n" for record in records)
    atomic_write_text(path, "".join(lines))
    log.info("wrote %d records to %s", len(records), path)
    return path


def relative_source(video: str | Path, manifest_dir: str | Path) -> str:
    """How a manifest in `manifest_dir` names `video`: relative when both share a root, else absolute."""
    video = Path(video).absolute()
    try:
        return Path(os.path.relpath(video, Path(manifest_dir).absolute())).as_posix()
    except ValueError:  # different drives on Windows
        return str(video)


# --- a user's own captioned videos ------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Pending:
    """Captions of one video gathered over several rows of an import file."""

    path: Path
    captions: list[str]
    split: str | None
    category: str | None
    where: str


def import_captions(path: str | Path, *, manifest_dir: str | Path, default_split: str = "train",
                    kind: str | None = None) -> list[VideoRecord]:
    """Records from a CSV (header ``video,caption[,split,category]``) or a JSON Lines file (objects with ``video``,
    ``caption`` or ``captions``, and optional ``split``, ``category``).

    Several rows may name the same video: their captions are gathered in order, and their split and category must
    agree. ``video`` is a path relative to the import file's directory unless absolute; the video id is its file name
    without suffix. Sources are written relative to `manifest_dir`, where the manifest will live. `kind` is
    ``"csv"`` or ``"jsonl"``; by default the file's suffix decides (``.csv`` or anything else).
    """
    path = Path(path)
    kind = kind or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    rows = _csv_rows(path) if kind == "csv" else _jsonl_rows(path)
    pending: dict[str, _Pending] = {}
    for where, row in rows:
        _merge_row(pending, row, base=path.parent, where=where)
    return [_pending_record(video_id, item, manifest_dir=manifest_dir, default_split=default_split)
            for video_id, item in pending.items()]


def _csv_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"video", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}:1: the header needs column(s) {', '.join(sorted(missing))}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            _check_csv_row(row, where=where)
            yield where, {key: value for key, value in row.items() if value not in (None, "")}


def _check_csv_row(row: dict[str | None, Any], *, where: str) -> None:
    """Every CSV row names a video and a caption: a row without a comma, or with an empty field, is a mistake."""
    if None in row:
        raise ManifestError(f"{where}: more fields than the header's ({len(row) - 1 + len(row[None])} fields)")
    if row.get("caption") is None:
        raise ManifestError(f"{where}: expected video,caption[,split,category] but the row has one field "
                            f"({str(row.get('video'))[:60]!r}: is a comma missing?)")
    if not row["caption"].strip():
        raise ManifestError(f"{where}: empty caption for {str(row.get('video'))[:60]!r}")


def _jsonl_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{path}:{number}", _json_object(line, where=f"{path}:{number}")


def _row_captions(row: dict[str, Any], *, where: str) -> list[str]:
    captions = row.get("captions", [row["caption"]] if "caption" in row else [])
    if isinstance(captions, str) or not all(isinstance(text, str) and text.strip() for text in captions):
        raise ManifestError(f"{where}: captions must be non-empty strings")
    return [text.strip() for text in captions]


def _merge_row(pending: dict[str, _Pending], row: dict[str, Any], *, base: Path, where: str) -> None:
    video = row.get("video")
    if not isinstance(video, str) or not video:
        raise ManifestError(f"{where}: missing video path")
    video_path = base / video
    captions = _row_captions(row, where=where)
    item = pending.setdefault(video_path.stem, _Pending(video_path, [], row.get("split"), row.get("category"), where))
    if item.path != video_path:
        raise ManifestError(f"{where}: {video_path} and {item.path} ({item.where}) would share video id "
                            f"{video_path.stem!r}")
    for key in ("split", "category"):
        if getattr(item, key) is None:
            setattr(item, key, row.get(key))
        elif key in row and row[key] != getattr(item, key):
            raise ManifestError(f"{where}: {key} {row[key]!r} disagrees with {getattr(item, key)!r} given for the "
                                f"same video at {item.where}")
    item.captions.extend(captions)


def _pending_record(video_id: str, item: _Pending, *, manifest_dir: str | Path, default_split: str) -> VideoRecord:
    try:
        return VideoRecord(video_id=video_id, source=relative_source(item.path, manifest_dir),
                           captions=tuple(item.captions), split=item.split or default_split, category=item.category)
    except ValueError as error:
        raise ManifestError(f"{item.where}: {error}") from None
