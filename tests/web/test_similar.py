"""More like this: `GET /api/videos/{id}/similar?start=`, and the links on hits and in the player."""

from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.urls import reverse

from vidsearch.store.search import moment_row, stored_vectors


def expected_scores(library, video_id, start):
    """Cosines of the moment's stored vector with every row of the other videos: the best per video, best first."""
    store = library.store
    vectors = stored_vectors(store, "video_feature", np.arange(len(store)))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ vectors[moment_row(store, video_id, start)]
    best: dict[str, float] = {}
    for row_video, score in zip(store.rows.video_id, scores.tolist()):
        if row_video != video_id:
            best[row_video] = max(best.get(row_video, -2.0), score)
    return sorted(best.items(), key=lambda item: -item[1])


def test_api_similar_is_the_moments_own_vector_without_its_video(client, site, some_video):
    body = client.get(f"/api/videos/{some_video}/similar", {"start": "2", "k": "3"}).json()
    assert body["query"] == f"like {some_video} at 2 s" and len(body["hits"]) == 3
    expected = expected_scores(site, some_video, 2.0)[:3]
    assert [h["video_id"] for h in body["hits"]] == [video for video, _ in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert {"confidence", "confidence_label"} <= set(body["hits"][0]) and isinstance(body["confident"], bool)


@pytest.mark.parametrize("path, params", [("nobody", {}), ("{video}", {"start": "999"})])
def test_api_similar_of_an_unknown_video_or_moment_is_404(client, site, some_video, path, params):
    response = client.get(f"/api/videos/{path.format(video=some_video)}/similar", params)
    assert response.status_code == 404 and "moment" in response.json()["error"]


def test_api_similar_bad_parameters_are_400(client, site, some_video):
    for params in ({"start": "-1"}, {"start": ""}, {"k": "0"}):
        assert client.get(f"/api/videos/{some_video}/similar", params).status_code == 400, params


def test_hits_link_to_more_like_their_best_moment(client, site):
    page = client.get("/", {"q": "a red circle moves left", "k": 3})
    html = page.content.decode()
    for hit in page.context["hits"]:
        link = urlsplit(hit.similar_url)
        assert link.path == reverse("similar", args=[hit.video_id])
        assert parse_qs(link.query) == {"start": [f"{hit.moments[0].start:g}"]}
        assert f'href="{hit.similar_url}">more like this</a>' in html


def test_the_more_like_this_page_and_the_players_link(client, site, some_video):
    player = client.get(reverse("player", args=[some_video]), {"t": "2", "end": "4"}).content.decode()
    url = f"{reverse('similar', args=[some_video])}?start=2"
    assert f'href="{url}">more like this moment</a>' in player
    page = client.get(reverse("similar", args=[some_video]), {"start": "2", "k": "4"})
    html = page.content.decode()
    assert page.status_code == 200 and len(page.context["hits"]) == 4
    assert f"4 videos for <q>like {some_video} at 2 s</q>" in html
    assert some_video not in [hit.video_id for hit in page.context["hits"]]
    assert client.get(reverse("similar", args=["nobody"])).status_code == 404
