"""``/docs`` and ``/openapi.json`` of a real ``pipeflow serve``: the OpenAPI document (every feature
name) needs a token with the ``predict`` scope when tokens are set, as ``/v1/models/NAME`` does;
Swagger UI's page and every file it loads come from the server itself (an air-gapped install
has no CDN), checked by fetching them and, in Debian's chromium, by loading the page with every
request outside 127.0.0.1 refused."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

PREDICTOR = "predictor-token-0123456789"
WATCHER = "watcher-token-0123456789"


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"{PREDICTOR} predict\n{WATCHER} metrics\n")
    return path


class _Refs(HTMLParser):
    """Every URL a page loads by itself: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def test_the_openapi_document_needs_the_predict_scope_like_the_model(serve, tokens) -> None:
    s = serve("tumours@production", "--tokens", str(tokens))
    with s.client() as c:
        bare = c.get("/openapi.json")
        assert bare.status_code == 401 and "mean_radius" not in bare.text
        assert bare.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models/tumours").status_code == 401  # the same facts, the same rule
        watcher = c.get("/openapi.json", headers={"Authorization": f"Bearer {WATCHER}"})
        assert watcher.status_code == 403
        schema = c.get("/openapi.json", headers={"Authorization": f"Bearer {PREDICTOR}"})
        assert schema.status_code == 200 and "mean_radius" in schema.text
        assert (
            "/docs" not in schema.json()["paths"] and "/openapi.json" not in schema.json()["paths"]
        )
        assert c.get("/redoc").status_code == 404  # it would load its script from a CDN


def test_docs_and_every_file_it_loads_come_from_the_server(serve, tokens) -> None:
    s = serve("tumours@production", "--tokens", str(tokens))
    with s.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        refs = _Refs()
        refs.feed(page.text)
        assert len(refs.urls) == 3, refs.urls  # the script, the stylesheet, the icon
        assert not re.search(r"https?://", page.text), "the page names nothing outside"
        for url in refs.urls:
            absolute = urljoin(s.url + "/docs", url)
            assert urlsplit(absolute).netloc == urlsplit(s.url).netloc, url
            asset = c.get(absolute)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
        css = c.get("/docs/assets/swagger-ui.css").text
        assert not re.search(r"url\(\s*['\"]?https?://", css), (
            "the stylesheet loads nothing outside"
        )
        assert c.get("/docs/assets/..%2F..%2Fconsts.py").status_code == 404
        assert c.get("/docs/assets/redoc.standalone.js").status_code == 404  # not on the list


def test_swagger_ui_renders_offline_once_given_a_token(serve, tokens) -> None:
    """In chromium, with every request to anything but the server refused: the page asks for the
    token, then lists the routes (so the document was fetched with the token)."""
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("PIPEFLOW_SKIP_BROWSER") == "1":
            pytest.skip("no chromium and PIPEFLOW_SKIP_BROWSER=1")
        pytest.fail("the browser tests need Debian's chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    s = serve("tumours@production", "--tokens", str(tokens))
    outside: list[str] = []
    own = urlsplit(s.url).netloc

    def only_the_server(route) -> None:  # noqa: ANN001 (a playwright Route)
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(s.url + "/docs")
            page.wait_for_selector("#pipeflow-token input", state="visible")
            page.fill("#pipeflow-token input", PREDICTOR)
            page.click("#pipeflow-token button")
            predict = '.opblock-summary-path[data-path="/v1/models/{name}/predict"]'
            page.wait_for_selector(predict, timeout=20_000)
        finally:
            browser.close()
    assert outside == []
