"""The JSON API answers as its OpenAPI description says, for good and bad input."""

import jsonschema
import pytest
from django.urls import URLPattern, get_resolver
from openapi_spec_validator import validate

from vidsearch.web.library.openapi import description


@pytest.fixture(scope="module")
def spec():
    return description()


def assert_matches(spec, schema_name, body):
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_the_description_is_valid_openapi_and_names_every_api_route(client, spec):
    validate(spec)
    assert client.get("/api/openapi.json").json() == spec
    routes = {"/" + str(p.pattern).replace("<str:video_id>", "{video_id}") for p in get_resolver().url_patterns
              if isinstance(p, URLPattern) and str(p.pattern).startswith("api/")}
    assert routes - {"/api/openapi.json"} == set(spec["paths"])


@pytest.mark.parametrize("mode", ["vector", "text", "hybrid"])
def test_search_in_every_mode(client, site, spec, web_library, mode):
    word = web_library.records[0].captions[0].split()[1]
    response = client.get("/api/search", {"q": word, "k": 3, "mode": mode})
    body = response.json()
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert_matches(spec, "SearchResult", body)
    assert body["mode"] == mode and body["query"] == word
    assert len(body["hits"]) == (0 if mode == "text" else 3) and len(body["text_matches"]) <= 3
    assert (mode == "vector") == (body["text_matches"] == [])
    for hit in body["hits"]:
        assert hit["moments"][0]["player_url"] == hit["player_url"]
        assert client.get(hit["thumbnail_url"]).status_code == 200


def test_search_filters(client, site, web_library):
    category = web_library.records[0].category
    hits = client.get("/api/search", {"q": "a circle", "k": 50, "category": category}).json()["hits"]
    assert hits and {hit["category"] for hit in hits} == {category}
    assert client.get("/api/search", {"q": "a circle", "threshold": 0.999}).json()["hits"] == []


@pytest.mark.parametrize("params", [{}, {"q": "   "}, {"q": "x" * 201}, {"q": "a", "k": "0"}, {"q": "a", "k": "101"},
                                    {"q": "a", "k": "1.5"}, {"q": "a", "threshold": "-2"},
                                    {"q": "a", "threshold": "inf"}, {"q": "a", "mode": "exact"},
                                    {"q": "a\x00"}, {"q": "a", "category": "c" * 101},
                                    {"q": "a", "threshold": ""}, {"q": "a", "k": " "}, {"q": "a", "mode": ""}])
def test_bad_search_parameters_are_400_with_the_reason(client, site, spec, params):
    response = client.get("/api/search", params)
    assert response.status_code == 400
    assert_matches(spec, "Error", response.json())


def test_a_query_of_the_maximum_length_is_accepted(client, site):
    assert client.get("/api/search", {"q": "a" * 200}).status_code == 200


def test_only_get(client, site):
    assert client.post("/api/search", {"q": "a"}).status_code == 405


def test_video(client, site, spec, some_video, web_library):
    record = next(r for r in web_library.records if r.video_id == some_video)
    response = client.get(f"/api/videos/{some_video}")
    body = response.json()
    assert response.status_code == 200
    assert_matches(spec, "Video", body)
    assert body["captions"] == list(record.captions) and body["category"] == record.category
    assert [(s["start"], s["end"]) for s in body["segments"]] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert client.get(body["video_url"], HTTP_RANGE="bytes=0-9").status_code == 206


def test_unknown_video_is_404(client, site, spec):
    response = client.get("/api/videos/nope")
    assert response.status_code == 404
    assert_matches(spec, "Error", response.json())


def test_health(client, site, spec, web_library):
    body = client.get("/api/health").json()
    assert_matches(spec, "Health", body)
    assert body["status"] == "ok" and body["videos"] == len(web_library.records) and body["rows"] == 4 * body["videos"]


def test_health_without_a_store(client, db, spec, settings):
    settings.VIDSEARCH_STORE = None
    response = client.get("/api/health")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    assert_matches(spec, "Health", response.json())
    search = client.get("/api/search", {"q": "a"})
    assert search.status_code == 503
    assert_matches(spec, "Error", search.json())
