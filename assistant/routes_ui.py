"""The web UI: three server-rendered pages with a little JavaScript (no front-end build step).

    protege serve      # then open http://127.0.0.1:8321/  (chat), /ui/documents, /ui/learning

Pages are Jinja2 templates (assistant/templates/); their scripts and stylesheet are plain files
in assistant/static/, served at /ui/static/. The scripts call the same JSON API as any client
(/v1/chat/completions streamed as SSE, /v1/documents, /admin/runs, /admin/adapters), sending
`Authorization: Bearer <key>` when a key was entered in the page header (kept in localStorage);
without one they work against an open server. Nothing is fetched from outside the server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, page: str, title: str) -> HTMLResponse:
    # the served version is rendered in, so the header is right before any script has run
    context = {"page": page, "title": title, "served": request.app.state.switcher.served}
    return templates.TemplateResponse(request, template, context)


@router.get("/", response_class=HTMLResponse)
async def chat_page(request: Request) -> HTMLResponse:
    return _page(request, "chat.html", "chat", "Chat")


@router.get("/ui/documents", response_class=HTMLResponse)
async def documents_page(request: Request) -> HTMLResponse:
    return _page(request, "documents.html", "documents", "Documents")


@router.get("/ui/learning", response_class=HTMLResponse)
async def learning_page(request: Request) -> HTMLResponse:
    return _page(request, "learning.html", "learning", "Learning")


def install_ui(app: FastAPI) -> None:
    """Add the pages and mount their static files on `app`."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
