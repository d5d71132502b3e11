"""Confidence on the page and in the API: words per hit, and "no confident match" with the nearest shown anyway."""

import jsonschema
import pytest

from vidsearch.store import search
from vidsearch.web.library.openapi import description

QUERY = "a red circle moves left"


def assert_matches(schema_name, body):
    spec = description()
    jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                     "components": spec["components"]}).validate(body)


@pytest.fixture
def all_confident(monkeypatch):
    monkeypatch.setattr(search, "NULL_Z_MIDPOINT", -1e3)  # every z-score far above the midpoint: confidence 1


@pytest.fixture
def none_confident(monkeypatch):
    monkeypatch.setattr(search, "NULL_Z_MIDPOINT", 1e3)


def test_api_hits_carry_confidence_and_label(client, site, all_confident):
    body = client.get("/api/search", {"q": QUERY, "k": 3}).json()
    assert_matches("SearchResult", body)
    assert body["confident"] is True and len(body["hits"]) == 3
    assert [(h["confidence"], h["confidence_label"]) for h in body["hits"]] == [(1.0, "high")] * 3
    assert all(m["confidence"] == 1.0 for h in body["hits"] for m in h["moments"])


def test_api_says_when_nothing_is_confident(client, site, none_confident):
    body = client.get("/api/search", {"q": QUERY, "k": 3}).json()
    assert_matches("SearchResult", body)
    assert body["confident"] is False and len(body["hits"]) == 3, "the nearest are still returned"
    assert {h["confidence_label"] for h in body["hits"]} == {"low"}
    assert client.get("/api/search", {"q": QUERY, "min_confidence": "0.5"}).json()["hits"] == []


def test_page_says_good_match(client, site, all_confident):
    html = client.get("/", {"q": QUERY, "k": 3}).content.decode()
    assert html.count("good match</span>") == 3 and "No confident match" not in html


def test_page_says_no_confident_match_and_marks_the_nearest(client, site, none_confident):
    html = client.get("/", {"q": QUERY, "k": 3}).content.decode()
    assert "No confident match for <q>a red circle moves left</q>" in html
    assert html.count('<article class="card nearest">') == 3 and html.count("nearest · weak match</span>") == 3


def test_bad_min_confidence_is_400(client, site):
    response = client.get("/api/search", {"q": QUERY, "min_confidence": "1.5"})
    assert response.status_code == 400 and "min_confidence" in response.json()["error"]
