"""The pages' server side without a broker: which rows a live stream sends, and what the page routes answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetstream.api.live import changed_rows
from fleetstream.api.pages import PAGES, STATIC_DIR, mount_pages


def test_a_stream_sends_new_and_changed_rows_once() -> None:
    seen: dict[str, str] = {}
    first: list[dict[str, Any]] = [{"alert_id": "a", "acked_at": None}, {"alert_id": "b", "acked_at": None}]
    assert changed_rows(seen, first, "alert_id") == first
    assert changed_rows(seen, first, "alert_id") == []
    acked: list[dict[str, Any]] = [{"alert_id": "a", "acked_at": "2026-12-02 10:00:00"},
                                   {"alert_id": "b", "acked_at": None}]
    assert changed_rows(seen, acked, "alert_id") == [acked[0]]


def _client() -> TestClient:
    app = FastAPI()
    mount_pages(app)
    return TestClient(app)


def test_every_page_is_the_shell_naming_itself_and_loads_only_local_assets() -> None:
    with _client() as c:
        for page in PAGES:
            response = c.get(f"/ui/{page}")
            assert response.status_code == 200
            assert f'data-page="{page}"' in response.text
            assert "http://" not in response.text and "https://" not in response.text
            assert "default-src 'self'" in response.headers["content-security-policy"]


def test_an_unknown_page_is_a_404_naming_the_pages() -> None:
    with _client() as c:
        response = c.get("/ui/nope")
    assert response.status_code == 404 and "fleet" in response.json()["detail"]


def test_the_root_sends_to_the_login_page_and_static_files_are_served() -> None:
    with _client() as c:
        assert c.get("/", follow_redirects=False).headers["location"] == "/ui/login"
        assert 'id="login-form"' in c.get("/ui/login").text
        for name in ("app.js", "charts.js", "style.css"):
            assert c.get(f"/static/{name}").status_code == 200


def test_the_scripts_fetch_nothing_from_another_origin() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path.name
