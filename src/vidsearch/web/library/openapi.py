"""The API's OpenAPI 3.1 description, written by hand beside the views it describes (tests check both agree)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from vidsearch import __version__

NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_STRING = {"type": ["string", "null"]}
NO_NUL = r"^[^\u0000]*$"  # Django refuses NUL characters in text parameters
NO_NUL_WITH_TEXT = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _search_parameters() -> list[dict[str, Any]]:
    return [
        _query("q", "what to find, in words (must contain a non-space character)",
               {"type": "string", "minLength": 1, "maxLength": settings.VIDSEARCH_MAX_QUERY_CHARS,
                "pattern": NO_NUL_WITH_TEXT}, required=True),
        _query("k", f"videos to return (default {settings.VIDSEARCH_DEFAULT_K})",
               {"type": "integer", "minimum": 1, "maximum": settings.VIDSEARCH_MAX_K}),
        _query("threshold", "minimum cosine similarity of a moment", {"type": "number", "minimum": -1, "maximum": 1}),
        _query("min_confidence", "minimum confidence of a moment (0: none, 0.5: medium or better, 0.8: high)",
               {"type": "number", "minimum": 0, "maximum": 1}),
        _query("category", "only videos of this category", {"type": "string", "maxLength": 100, "pattern": NO_NUL}),
        _query("mode", "vector: CLIP similarity; text: caption substring match; hybrid: both, fused",
               {"type": "string", "enum": ["vector", "text", "hybrid"], "default": "vector"}),
    ]


def _example_search_body(field: str, description: str, content_type: str) -> dict[str, Any]:
    """A multipart body: the example file in `field`, and the filters of a search."""
    fields = {
        field: {"type": "string", "format": "binary", "description": description},
        "k": {"type": "integer", "minimum": 1, "maximum": settings.VIDSEARCH_MAX_K},
        "threshold": {"type": "number", "minimum": -1, "maximum": 1},
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "category": {"type": "string", "maxLength": 100, "pattern": NO_NUL},
    }
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": [field], "properties": fields},
        "encoding": {field: {"contentType": content_type}}}}}


def _image_search_body() -> dict[str, Any]:
    limit_mb = settings.VIDSEARCH_MAX_IMAGE_BYTES / 2**20
    return _example_search_body("image", f"the example image: any format Pillow reads, at most {limit_mb:g} MB and "
                                         f"{settings.VIDSEARCH_MAX_IMAGE_PIXELS} pixels",
                                "image/png, image/jpeg, image/*")


def _clip_search_body() -> dict[str, Any]:
    limit_mb = settings.VIDSEARCH_MAX_CLIP_BYTES / 2**20
    return _example_search_body(
        "clip", f"the example video clip: MP4, MOV, MKV, WebM, AVI or MPEG-TS, at most {limit_mb:g} MB and "
                f"{settings.VIDSEARCH_MAX_CLIP_SECONDS:g} s; its keyframes are sampled as the library's were (one "
                f"moment) and encoded by the video tower", "video/mp4, video/*")


def _schemas() -> dict[str, Any]:
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    moment = {"type": "object",
              "required": ["start", "end", "score", "confidence", "label", "thumbnail_url", "player_url"],
              "properties": {"start": NULLABLE_NUMBER, "end": NULLABLE_NUMBER, "score": {"type": "number"},
                             "confidence": confidence,
                             "label": {"type": "string"}, "thumbnail_url": {"type": "string"},
                             "player_url": {"type": "string"}}}
    hit_fields = {"video_id": {"type": "string"}, "title": {"type": "string"}, "category": NULLABLE_STRING,
                  "score": NULLABLE_NUMBER, "fused_score": NULLABLE_NUMBER,
                  "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                  "confidence_label": {"type": ["string", "null"], "enum": ["high", "medium", "low", None]},
                  "text_match": {"type": "boolean"},
                  "matched_moments": {"type": "integer", "minimum": 0}, "thumbnail_url": {"type": "string"},
                  "player_url": {"type": "string"}, "video_url": {"type": "string"},
                  "moments": {"type": "array", "items": {"$ref": "#/components/schemas/Moment"}}}
    match_fields = {"video_id": {"type": "string"}, "category": NULLABLE_STRING,
                    "captions": {"type": "array", "items": {"type": "string"}}, "player_url": {"type": "string"}}
    result_fields = {
        "query": {"type": "string"}, "mode": {"type": "string", "enum": ["vector", "text", "hybrid"]},
        "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        "confident": {"type": "boolean", "description": "some hit is a medium or high confidence match"},
        "text_matches": {"type": "array", "items": {"$ref": "#/components/schemas/TextMatch"}},
        "store_version": {"type": "integer"}, "index": NULLABLE_STRING, "cached_query": {"type": "boolean"},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}}}
    segment = {"type": "object", "required": ["start", "end", "label", "thumbnail_url", "player_url"],
               "properties": {"start": NULLABLE_NUMBER, "end": NULLABLE_NUMBER, "label": {"type": "string"},
                              "thumbnail_url": {"type": "string"}, "player_url": {"type": "string"}}}
    video_fields = {"video_id": {"type": "string"}, "title": {"type": "string"}, "category": NULLABLE_STRING,
                    "captions": {"type": "array", "items": {"type": "string"}}, "duration": NULLABLE_NUMBER,
                    "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
                    "video_url": {"type": "string"}, "player_url": {"type": "string"},
                    "thumbnail_url": {"type": "string"},
                    "segments": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}}}
    health_fields = {"status": {"type": "string", "enum": ["ok", "unavailable"]}, "videos": {"type": "integer"},
                     "rows": {"type": "integer"}, "store_version": {"type": "integer"}, "model": {"type": "string"},
                     "error": {"type": "string"}}
    return {
        "Moment": moment,
        "Hit": {"type": "object", "required": list(hit_fields), "properties": hit_fields},
        "TextMatch": {"type": "object", "required": list(match_fields), "properties": match_fields},
        "SearchResult": {"type": "object", "required": list(result_fields), "properties": result_fields},
        "Segment": segment,
        "Video": {"type": "object", "required": list(video_fields), "properties": video_fields},
        "Health": {"type": "object", "required": ["status"], "properties": health_fields},
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}, "fields": {"type": "object"}}},
    }


def description() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "vidsearch", "version": __version__,
                 "description": "Text-to-video search over a video library: videos and the moments inside them."},
        "paths": {
            "/api/search": {"get": {
                "operationId": "search", "summary": "Videos (and their best moments) matching a sentence",
                "parameters": _search_parameters(),
                "responses": {"200": _ok("hits, best first", "SearchResult"), "400": _error("invalid parameters"),
                              "503": _error("no store to search")}}},
            "/api/search/image": {"post": {
                "operationId": "searchImage",
                "summary": "Videos (and their best moments) like an example image, encoded as a one-frame video",
                "requestBody": _image_search_body(),
                "responses": {"200": _ok("hits, best first", "SearchResult"),
                              "400": _error("invalid parameters, or a file that is not a decodable image"),
                              "413": _error("the image is over the size limit"),
                              "503": _error("no store to search")}}},
            "/api/search/clip": {"post": {
                "operationId": "searchClip",
                "summary": "Videos (and their best moments) like an example video clip, encoded by the video tower",
                "requestBody": _clip_search_body(),
                "responses": {"200": _ok("hits, best first", "SearchResult"),
                              "400": _error("invalid parameters, or a file that is not a video clip decodable within "
                                            "the limits (duration, decoding time)"),
                              "413": _error("the clip is over the size limit"),
                              "429": _error("the server is decoding as many clips as it does at once; try again "
                                            "after Retry-After seconds"),
                              "503": _error("no store to search")}}},
            "/api/videos/{video_id}": {"get": {
                "operationId": "video", "summary": "One video: category, captions, moments, file URLs",
                "parameters": [{"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("the video", "Video"), "404": _error("no such video"),
                              "503": _error("no store to search")}}},
            "/api/videos/{video_id}/similar": {"get": {
                "operationId": "similar",
                "summary": "More like one moment of a video: its stored vector as the query, the video excluded",
                "parameters": [
                    {"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query("start", "the moment: the video's row whose span holds this time, in seconds (none: its "
                                    "first)", {"type": "number", "minimum": 0, "maximum": 1e9}),
                    *[p for p in _search_parameters() if p["name"] in ("k", "threshold", "min_confidence",
                                                                        "category")]],
                "responses": {"200": _ok("hits, best first", "SearchResult"), "400": _error("invalid parameters"),
                              "404": _error("no such video, or no moment at that time"),
                              "503": _error("no store to search")}}},
            "/api/health": {"get": {
                "operationId": "health", "summary": "Whether the store is loaded, and its size and version",
                "responses": {"200": _ok("serving", "Health"), "503": _ok("no store", "Health")}}},
        },
        "components": {"schemas": _schemas()},
    }
