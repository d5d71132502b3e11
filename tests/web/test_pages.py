"""The pages of the thesis §4.5: navigation bar, results with thumbnails and scores, text match, random query, player."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from vidsearch.web.library.models import Category, VideoClip


def test_landing_page_shows_the_navigation_bar_and_examples(client, site, web_library):
    page = client.get("/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'role="search"' in html and "Text match" in html and f"{len(web_library.records)} videos" in html
    examples = re.findall(r'class="examples".*?</ul>', html, re.S)[0]
    captions = {caption for record in web_library.records for caption in record.captions}
    assert any(caption in examples for caption in captions)


def test_results_are_a_grid_of_moment_thumbnails_with_scores_linking_to_the_player(client, site):
    page = client.get("/", {"q": "a red circle moves left", "k": 5})
    html = page.content.decode()
    assert page.status_code == 200 and page.context["hits"]
    assert len(page.context["hits"]) == 5 and html.count('<article class="card') == 5
    for hit in page.context["hits"]:
        moment = hit.moments[0]
        assert f'src="{hit.thumbnail_url}"' in html and f"{hit.score:.3f}" in html
        link = urlsplit(hit.player_url)
        params = parse_qs(link.query)
        assert link.path == reverse("player", args=[hit.video_id])
        assert params["t"] == [f"{moment.start:g}"] and params["end"] == [f"{moment.end:g}"]
        assert params["q"] == ["a red circle moves left"] and moment.end - moment.start == pytest.approx(2.0)
    assert 'class="side"' not in html  # text match off: no caption column


def test_text_match_lists_the_videos_whose_captions_contain_the_query(client, site, web_library):
    word = web_library.records[0].captions[0].split()[-1]
    expected = VideoClip.objects.filter(sentences__icontains=word).count()
    page = client.get("/", {"q": word, "text": "1"})
    html = page.content.decode()
    side = html[html.index('class="side"'):]
    assert page.context["captions"].count == expected > 0
    assert f'<span class="badge">{expected}</span>' in side
    for match in page.context["captions"].matches:
        assert word.casefold() in match.caption.casefold()
        assert f'href="/videos/{match.video_id}/?text=1"' in side


def test_the_text_match_switch_flips_the_mode_and_keeps_the_query(client, site):
    off = client.get("/", {"q": "a circle"}).context["text_toggle_url"]
    assert parse_qs(urlsplit(off).query) == {"q": ["a circle"], "text": ["1"]}
    on = client.get("/", {"q": "a circle", "text": "1"})
    assert parse_qs(urlsplit(on.context["text_toggle_url"]).query) == {"q": ["a circle"]}
    assert '<input type="hidden" name="text" value="1">' in on.content.decode()


def test_an_empty_query_searches_a_random_caption_shown_in_the_box(client, site, web_library):
    page = client.get("/", {"q": "", "text": "1"})
    assert page.status_code == 302
    params = parse_qs(urlsplit(page.url).query)
    assert params["text"] == ["1"]
    assert params["q"][0] in {caption for record in web_library.records for caption in record.captions}
    results = client.get(page.url)
    assert results.status_code == 200 and results.context["hits"]
    assert f'value="{params["q"][0]}"' in results.content.decode()


def test_an_empty_query_without_captions_says_so(client, library, db):
    page = client.get("/", {"q": "  "})
    assert page.status_code == 200 and "Nothing to pick from" in page.content.decode()


@pytest.mark.parametrize("params", [{"q": "x" * 201}, {"q": "a", "k": "0"}, {"q": "a", "k": "101"},
                                    {"q": "a", "k": "many"}, {"q": "a", "threshold": "1.5"},
                                    {"q": "a", "threshold": "nan"}, {"q": "a\x00b"}])
def test_bad_parameters_are_refused_with_the_reason(client, site, params):
    page = client.get("/", params)
    assert page.status_code == 400 and 'class="notice error"' in page.content.decode()
    assert "hits" not in page.context


def test_threshold_and_category_filter_the_moments(client, site):
    none = client.get("/", {"q": "a red circle", "threshold": "0.999"})
    assert none.context["hits"] == [] and "No video matches above score 0.999" in none.content.decode()
    category = Category.objects.order_by("-video_count").first().name
    page = client.get("/", {"q": "a red circle", "category": category, "k": 50})
    assert page.context["hits"] and {hit.category for hit in page.context["hits"]} == {category}
    assert f'<option value="{category}" selected>' in page.content.decode()


def test_the_player_starts_at_the_moment_and_marks_it(client, site, some_video, web_library):
    page = client.get(reverse("player", args=[some_video]), {"t": "2", "end": "4", "q": "a circle", "k": "20"})
    html = page.content.decode()
    assert page.status_code == 200
    assert f'src="/media/{some_video}/video#t=2,4"' in html and 'data-start="2" data-end="4"' in html
    assert "Matching moment <strong>0:02–0:04</strong>" in html and " controls " in html
    assert 'href="/?q=a+circle&amp;k=20"' in html  # back to the same results


def test_the_player_takes_the_shape_of_the_video(client, site, some_video, web_library, monkeypatch):
    """Its width and height (as displayed) size the player box: a wide video is not shown in a square."""
    import dataclasses

    from vidsearch.web.library import selectors, views

    detail = selectors.video_detail(video_id=some_video)
    html = client.get(reverse("player", args=[some_video])).content.decode()
    assert f'width="{detail.width}" height="{detail.height}"' in html, html
    wide = dataclasses.replace(detail, width=1920, height=1080)
    monkeypatch.setattr(views.selectors, "video_detail", lambda video_id: wide)
    html = client.get(reverse("player", args=[some_video])).content.decode()
    assert 'width="1920" height="1080"' in html
    monkeypatch.setattr(views.selectors, "video_detail", lambda video_id: dataclasses.replace(detail, width=None))
    assert "width=" not in re.search(r"<video[^>]*>", client.get(reverse("player", args=[some_video]))
                                     .content.decode()).group(0)


@pytest.mark.parametrize("text", ["1", None])
def test_the_player_shows_category_and_all_captions_with_or_without_text_match(client, site, some_video, web_library,
                                                                               text):
    record = next(r for r in web_library.records if r.video_id == some_video)
    html = client.get(reverse("player", args=[some_video]), {"text": text} if text else {}).content.decode()
    side = html[html.index('class="side"'):]
    assert record.category in side and all(caption in side for caption in record.captions), html
    assert f'<h1 title="{some_video}">{record.captions[0]}</h1>' in html, html
    assert "Matching moment" not in html and "← Home" in html


def test_the_player_keeps_the_moment_inside_the_video(client, site, some_video):
    page = client.get(reverse("player", args=[some_video]), {"t": "100", "end": "5"})
    assert page.context["start"] == page.context["end"] == pytest.approx(8.0, abs=0.3)
    assert client.get(reverse("player", args=[some_video]), {"t": "-1"}).context["start"] is None


def test_unknown_videos_are_404(client, site):
    assert client.get(reverse("player", args=["no-such-video"])).status_code == 404
    assert client.get("/videos/..%2F..%2Fetc%2Fpasswd/").status_code == 404


def test_a_missing_store_answers_503(client, db, settings):
    settings.VIDSEARCH_STORE = None
    page = client.get("/", {"q": "a circle"})
    assert page.status_code == 503 and "no store configured" in page.content.decode()


# --- 15.8 / 15.9: error pages in the site's own template, JSON under /api/; the login page's command ---------------


@pytest.mark.parametrize("path, message", [("/nonsense/", "there is no page at this address"),
                                           ("/videos/nope/", "no such video")])
def test_a_missing_page_is_the_sites_page_with_its_search_box(client, site, path, message):
    page = client.get(path)
    html = page.content.decode()
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html"), html
    assert "<title>404 · vidsearch</title>" in html and 'id="search-form"' in html, html
    assert f'<p class="notice error">{message}</p>' in html, html


@pytest.mark.parametrize("path", ["/api/nonsense", "/api/videos/", "/api/search/extra"])
def test_an_unknown_api_address_answers_json(client, site, path):
    response = client.get(path)
    assert (response.status_code, response["Content-Type"]) == (404, "application/json"), response.content
    assert response.json() == {"error": "there is no page at this address"}


def test_a_failing_page_is_the_sites_500_page_and_a_failing_api_call_json(client, site, monkeypatch, some_video):
    from vidsearch.web.library import selectors

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(selectors, "video_detail", broken)
    client.raise_request_exception = False
    page = client.get(reverse("player", args=[some_video]))
    html = page.content.decode()
    assert page.status_code == 500 and 'id="search-form"' in html and "disk on fire" not in html, html
    assert '<p class="notice error">something went wrong on the server; it has been logged</p>' in html, html
    response = client.get(reverse("api-video", args=[some_video]))
    assert (response.status_code, response.json()) == (
        500, {"error": "something went wrong on the server; it has been logged"}), response.content


def test_the_login_page_names_this_servers_python_and_store_in_its_createsuperuser_command(client, db, settings,
                                                                                             tmp_path, monkeypatch):
    import sys

    settings.VIDSEARCH_STORE = tmp_path / "my store"
    monkeypatch.chdir(tmp_path)  # the store is shown relative to the working directory, this Python (outside) whole
    html = client.get(reverse("login")).content.decode()
    assert f"<code>{sys.executable} -m vidsearch.web.manage --store &#x27;my store&#x27; createsuperuser</code>" \
        in html, html


# --- 15.16: titles on cards and in the player, the full id on hover -------------------------------------------------


def test_result_cards_are_titled_by_the_first_caption_with_the_full_id_on_hover(client, site, web_library):
    first_caption = {record.video_id: record.captions[0] for record in web_library.records}
    page = client.get("/", {"q": "a red circle moves left", "k": 5})
    html = page.content.decode()
    for hit in page.context["hits"]:
        assert hit.title == first_caption[hit.video_id]
        assert f'title="{hit.video_id}">{hit.title}</a>' in html, html


def test_a_video_without_captions_is_titled_by_its_file_name(client, site, some_video):
    from vidsearch.web.library import selectors

    VideoClip.objects.filter(video_id=some_video).update(sentences="")
    assert selectors.video_titles(video_ids=[some_video]) == {some_video: f"{some_video}.mp4"}
    assert client.get("/api/videos/" + some_video).json()["title"] == f"{some_video}.mp4"
