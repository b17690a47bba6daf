"""The web pages of `fleetstream serve`: a login page and the dashboards, as static HTML, CSS and JavaScript
shipped inside the package (no CDN, no build step, no npm at install time).

The pages hold no data and need no login to fetch: each page's script logs in through
`POST /api/v1/auth/login`, keeps the JWT in the tab's sessionStorage and calls the JSON API with it, so the
API's role, tenant and vehicle checks decide what a page shows; a refusal is shown as such on the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["PAGES", "STATIC_DIR", "mount_pages"]

STATIC_DIR = Path(__file__).resolve().parent / "static"  # package data beside this module, wherever installed
PAGES = ("fleet", "owner", "technician", "executive", "admin", "vehicles", "vehicle", "channel", "dyno", "alerts")
"""Page name → `/ui/<name>`, each the shell `page.html` whose script draws that page."""

router = APIRouter(include_in_schema=False)
_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy":
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'"}


def _shell(page: str) -> str:
    return (STATIC_DIR / "page.html").read_text(encoding="utf-8").replace("{{page}}", page)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/login")


@router.get("/ui/login")
def login_page() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "login.html").read_text(encoding="utf-8"), headers=_HEADERS)


@router.get("/ui/{page}")
def page(page: str) -> HTMLResponse:
    if page not in PAGES:
        raise HTTPException(404, f"no page {page!r}; pages: login, {', '.join(PAGES)}")
    return HTMLResponse(_shell(page), headers=_HEADERS)


def mount_pages(app: FastAPI) -> None:
    """Add the pages and their static files (`/static/...`) to the app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
