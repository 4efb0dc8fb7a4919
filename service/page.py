"""The page for support agents, served by the service itself at `/` (no build step).

`GET /` and `GET /tickets/{id}` render one Jinja2 template: a shell that names the view and says whether the
service wants API keys. The data comes from the JSON API, fetched by `static/page.js` with the agent's key as
a Bearer header (kept in sessionStorage, never in a URL), and every ticket text is put into the page as text
(`textContent`), never as HTML. Its inputs take what the API takes (the limits of `ticketsearch/requests.py`):
a ticket pasted whole is checked whole, not cut by the browser. Deep links: `/?q=TEXT`, `/?like=ID`,
`/?collection=NAME&q=...`.

Safe by construction: a strict Content-Security-Policy on every page response (scripts, styles and requests
from this origin only, no inline script or style, no frames), no third-party requests. The page's assets
are a few kilobytes, served from memory with a content hash in their URL and cached for a year.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .auth import ApiKeys
from .gate import ApiError
from .schemas import MAX_BODY, MAX_ID, MAX_QUERY, MAX_TITLE

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a deep link's query text stays on this origin
    "Cache-Control": "no-cache",
}
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # the content's hash: the asset's URL changes when it does

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def load_assets(folder: Path = HERE / "static") -> dict[str, Asset]:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in MEDIA:
            body = path.read_bytes()
            out[path.name] = Asset(body, MEDIA[path.suffix], hashlib.sha256(body).hexdigest()[:16])
    return out


# A box's maxlength counts UTF-16 code units, the API's limits characters (code points): a character outside the
# BMP is two units, so a box that takes twice the API's limit cuts nothing the API takes (the API names what is
# over it, and the page shows that error)
BOX = 2


def add_page_routes(app: FastAPI, keys: ApiKeys, retry_after_s: int) -> None:
    assets = load_assets()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    template = env.get_template("page.html")

    def url(name: str) -> str:
        return f"/static/{name}?v={assets[name].version}"

    def render(view: str, ticket_id: str = "") -> HTMLResponse:
        html = template.render(view=view, ticket_id=ticket_id, keys="on" if keys.enabled else "off",
                               retry_after=retry_after_s, css=url("page.css"), js=url("page.js"),
                               icon=url("icon.svg"), max_query=BOX * MAX_QUERY, max_title=BOX * MAX_TITLE,
                               max_body=BOX * MAX_BODY)
        return HTMLResponse(html, headers=PAGE_HEADERS)

    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """Ask and answer: `?q=`, `?like=ID` and `?collection=NAME` open straight to an answer."""
        return render("search")

    @router.get("/tickets/{ticket_id:path}", response_class=HTMLResponse)
    async def ticket_page(ticket_id: str) -> HTMLResponse:
        """One ticket, its fields and text, and its similar tickets."""
        if not ticket_id or len(ticket_id) > MAX_ID:
            raise ApiError(404, "path.ticket_id", "no such page", type_="not_found")
        return render("ticket", ticket_id)

    @router.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise ApiError(404, "path.name", f"no asset {quote(name[:60])!r}", type_="not_found")
        versioned = request.query_params.get("v") == asset.version
        headers = {"ETag": asset.etag, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    app.include_router(router)
