"""A real browser (Debian's headless Chromium, driven by Playwright) searches, plays a moment and toggles text match."""

import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

pytestmark = pytest.mark.e2e


def moment_links(page) -> list[tuple[str, float]]:
    """Links on the results page that start a video past its beginning, with their start times."""
    links = []
    for href in page.eval_on_selector_all(".card a[href*='t=']", "anchors => anchors.map(a => a.getAttribute('href'))"):
        start = float(parse_qs(urlsplit(href).query).get("t", ["0"])[0])  # "more like this" has start=, no t=
        if start > 0:
            links.append((href, start))
    return links


def wait_until(page, expression: str, timeout_s: float = 30.0) -> None:
    """Like page.wait_for_function, whose polling evaluates a string in the page, which the site's
    Content-Security-Policy forbids (no 'unsafe-eval'); page.evaluate goes through the DevTools protocol instead."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        page.wait_for_timeout(50)


def test_search_play_a_moment_toggle_text_match_and_small_screens(browser, live_site, artifacts, web_library):
    query = web_library.records[0].captions[0]  # a real caption: the text match finds it
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked = []  # what the Content-Security-Policy refused: the site itself must need nothing it forbids
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(f"{live_site}/?{urlencode({'q': query, 'k': 8})}")
    assert page.locator("article.card").count() == 8
    assert page.locator(".nav .count").inner_text() == f"{len(web_library.records)} videos"
    assert page.evaluate("[...document.images].every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(artifacts / "results-1280.png"), full_page=True)

    href, start = moment_links(page)[0]
    page.locator(f".card a[href='{href}']").first.click()
    page.wait_for_url("**/videos/**")
    wait_until(page, "document.getElementById('player').readyState >= 1")
    current = page.evaluate("document.getElementById('player').currentTime")
    assert current == pytest.approx(start, abs=0.3)
    assert page.locator("#moment-label").is_visible() and page.locator("#moment-mark").bounding_box()["width"] > 0
    page.evaluate("document.getElementById('player').play()")
    wait_until(page, f"document.getElementById('player').currentTime > {start + 0.2}")
    page.screenshot(path=str(artifacts / "player-1280.png"), full_page=True)

    page.locator("a.switch").click()
    page.wait_for_url("**text=1**")
    assert page.locator("aside.side").is_visible() and page.locator("aside.side li").count() >= 1
    page.locator("a.back").click()
    page.wait_for_url("**text=1**")
    assert page.locator("input[name=q]").input_value() == query
    assert page.locator("aside.side h2").inner_text().startswith("Caption matches")
    assert query in page.locator("aside.side").inner_text()
    page.screenshot(path=str(artifacts / "results-text-1280.png"), full_page=True)
    side, main = page.locator("aside.side").bounding_box(), page.locator("section.results").bounding_box()
    assert side["x"] > main["x"] + main["width"] - 1  # beside the results
    wide_columns = columns(page)

    page.set_viewport_size({"width": 480, "height": 900})
    side, main = page.locator("aside.side").bounding_box(), page.locator("section.results").bounding_box()
    assert side["y"] >= main["y"] + main["height"] - 1  # under the results
    assert columns(page) < wide_columns
    page.screenshot(path=str(artifacts / "results-480.png"), full_page=True)
    assert blocked == []
    page.close()


def test_empty_query_searches_a_random_caption(browser, live_site, web_library):
    page = browser.new_page(viewport={"width": 480, "height": 900})
    page.goto(live_site)
    page.locator("input[name=q]").press("Enter")
    page.wait_for_selector("article.card")
    shown = page.locator("input[name=q]").input_value()
    assert shown in {caption for record in web_library.records for caption in record.captions}
    page.close()


def columns(page) -> int:
    """Thumbnails in the first row of the results grid."""
    tops = page.eval_on_selector_all("article.card", "cards => cards.map(c => c.getBoundingClientRect().top)")
    return sum(1 for top in tops if abs(top - tops[0]) < 1)


PLACEHOLDER_FITS = """(() => {
  const input = document.querySelector('input[name=q]'), style = getComputedStyle(input);
  const context = document.createElement('canvas').getContext('2d');
  context.font = style.font;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return [context.measureText(input.placeholder).width, room];
})()"""


def test_a_phone_sees_titles_the_whole_header_and_moment_chips_big_enough_to_tap(browser, live_site, web_library,
                                                                                  artifacts):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_site}/?{urlencode({'q': web_library.records[0].captions[0], 'k': 8})}")
    titles = page.eval_on_selector_all(".card .video-title", "links => links.map(a => [a.title, a.textContent])")
    captions = {record.video_id: record.captions[0] for record in web_library.records}
    assert titles and all(text == captions[video_id] for video_id, text in titles), titles
    upload = page.locator(".account a", has_text="Upload")
    assert upload.evaluate("a => a.getClientRects().length") == 1, "Upload wraps onto two lines"
    brand, link = page.locator(".brand").bounding_box(), upload.bounding_box()
    assert abs((link["y"] + link["height"] / 2) - (brand["y"] + brand["height"] / 2)) < 4, (brand, link)
    text_width, room = page.evaluate(PLACEHOLDER_FITS)
    assert text_width <= room, f"the placeholder needs {text_width:.0f} px, the box has {room:.0f}"
    chips = page.eval_on_selector_all(".more-moments a", "links => links.map(a => { const box = "
                                      "a.getBoundingClientRect(); return [box.width, box.height]; })")
    assert chips and all(width >= 44 and height >= 44 for width, height in chips), chips
    page.screenshot(path=str(artifacts / "results-390.png"), full_page=True)


def test_search_by_an_image_file_then_more_like_this(browser, live_site, artifacts, web_library):
    video_id = sorted(record.video_id for record in web_library.records)[0]
    still = sorted((web_library.cache / "frames" / video_id).glob("*.jpg"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(live_site)
    page.locator("input[name=image]").set_input_files(str(still))
    page.locator("form.example-search button").click()
    page.wait_for_url("**/search/image")
    page.wait_for_selector("article.card")
    assert page.locator(".summary q").inner_text() == f"image {still.name}"
    assert page.locator(".card .confidence").count() == page.locator("article.card").count() > 0
    page.screenshot(path=str(artifacts / "results-image-1280.png"), full_page=True)
    page.locator("a.more-like-this").first.click()
    page.wait_for_url("**/similar/**")
    page.wait_for_selector("article.card")
    assert page.locator(".summary q").inner_text().startswith("like ")
    assert blocked == []
    page.close()


def csp_watch(page) -> list[str]:
    """What the Content-Security-Policy refuses on the page, as it happens."""
    blocked = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text
            else None)
    return blocked


def library_video(web_library):
    from vidsearch.video.cache import open_cache

    video_id = sorted(record.video_id for record in web_library.records)[0]
    return video_id, open_cache(web_library.cache).entry(video_id).source


def test_search_by_a_chosen_clip(browser, live_site, artifacts, web_library):
    video_id, source = library_video(web_library)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked = csp_watch(page)
    page.goto(live_site)
    page.locator("form.example-search input[type=file]").set_input_files(source)
    assert page.locator("form.example-search input[type=file]").get_attribute("name") == "clip"
    page.locator("form.example-search button").click()
    page.wait_for_url("**/search/clip")
    page.wait_for_selector("article.card")
    assert page.locator(".summary q").inner_text() == f"clip {video_id}.mp4"
    titles = page.eval_on_selector_all(".card .video-title", "links => links.map(a => a.title)")
    assert video_id in titles[:3], titles
    page.screenshot(path=str(artifacts / "results-clip-1280.png"), full_page=True)
    assert blocked == []
    page.close()


DROP = """([data, name, type]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  return transfer;
}"""


def drop_file(page, selector: str, path, content_type: str) -> None:
    """Drag a file from outside the browser over `selector` and drop it there, as a file manager does."""
    data = base64.b64encode(open(path, "rb").read()).decode()
    transfer = page.evaluate_handle(DROP, [data, path.name, content_type])
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    assert page.evaluate("document.body.classList.contains('dropping')"), "no sign that a drop is expected"
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.mark.parametrize("kind", ["image", "clip"])
def test_a_file_dropped_on_the_search_box_is_searched(browser, live_site, web_library, kind):
    video_id, source = library_video(web_library)
    if kind == "image":
        path, content_type = sorted((web_library.cache / "frames" / video_id).glob("*.jpg"))[0], "image/jpeg"
    else:
        path, content_type = Path(source), "video/mp4"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked = csp_watch(page)
    page.goto(f"{live_site}/?{urlencode({'q': web_library.records[0].captions[0]})}")
    drop_file(page, "input[name=q]", path, content_type)
    page.wait_for_url(f"**/search/{kind}")
    page.wait_for_selector("article.card")
    assert page.locator(".summary q").inner_text() == f"{kind} {path.name}"
    assert page.locator("article.card").count() > 0
    assert blocked == []
    page.close()
