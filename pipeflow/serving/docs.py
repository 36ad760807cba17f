"""The API's own documentation: ``/openapi.json`` and Swagger UI at ``/docs``, with nothing
fetched from outside the server.

Policy, and why:

- **The OpenAPI document needs the ``predict`` scope** when tokens are configured, like
  ``/v1/models/NAME``: it holds the same facts (every feature name, its type, the classes), so
  serving it openly would hand a caller without a token what the token guards.
- **``/docs`` itself is open**: a browser cannot send a bearer token with a page it navigates to,
  and the page holds nothing but the title. Where the server has tokens, the page asks for one
  (kept in the browser tab's ``sessionStorage``, never in a URL) and Swagger UI sends it with
  every request it makes, the OpenAPI document's included.
- **Its assets come from this server** (``/docs/assets/...``), not from a CDN, so the page works
  on an air-gapped install. They are the Swagger UI files the ``fastapi-offline`` package ships
  (a dependency), served from a fixed list of names; Swagger UI's online validator is off. ReDoc
  (FastAPI's ``/redoc``) is not served.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

if TYPE_CHECKING:
    from pipeflow.serving.state import Server

#: what the page loads, by the name it is served under
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API</title>
<link rel="icon" type="image/png" href="{root}/docs/assets/favicon.png">
<link rel="stylesheet" href="{root}/docs/assets/swagger-ui.css">
<style>#pipeflow-token {{ font-family: sans-serif; margin: 1em 2em; }}</style>
</head>
<body>
<form id="pipeflow-token"{hidden}>
  <label>Bearer token <input type="password" name="token" autocomplete="off" size="40"></label>
  <button type="submit">Use</button>
  <span>this server needs a token with the <code>predict</code> scope; it is kept in this tab only</span>
</form>
<div id="swagger-ui"></div>
<script src="{root}/docs/assets/swagger-ui-bundle.js"></script>
<script>
const KEY = "pipeflow-serve-token";
function load() {{
  window.ui = SwaggerUIBundle({{
    url: {openapi},
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    requestInterceptor: (req) => {{
      const token = sessionStorage.getItem(KEY);
      if (token) req.headers.Authorization = "Bearer " + token;
      return req;
    }},
  }});
}}
document.getElementById("pipeflow-token").addEventListener("submit", (event) => {{
  event.preventDefault();
  sessionStorage.setItem(KEY, event.target.elements.token.value.trim());
  load();
}});
load();
</script>
</body>
</html>
"""


def asset_folder() -> Path:
    """Where the Swagger UI files are (the ``fastapi_offline`` package's ``static`` folder)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def register(app: FastAPI, server: Server) -> None:
    """``/openapi.json`` (``predict`` scope), ``/docs`` and its assets, none in the schema."""
    from pipeflow.serving.routes import refusal, reply

    async def openapi(request: Request) -> Response:
        if (refused := refusal(server, request, None, "predict")) is not None:
            return refused
        return reply(app.openapi())

    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        page = _PAGE.format(
            title=html.escape(app.title),
            root=html.escape(root),
            openapi=json.dumps(f"{root}/openapi.json").replace("<", "\\u003c"),
            hidden="" if server.tokens else " hidden",
        )
        return HTMLResponse(page)

    async def asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            from pipeflow.errors import BadRequest
            from pipeflow.serving.routes import failure

            return failure(server, BadRequest(404, "not_found", f"no asset {name!r} here"))
        return FileResponse(
            asset_folder() / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.get("/openapi.json", include_in_schema=False)(openapi)
    app.get("/docs", include_in_schema=False)(docs)
    app.get("/docs/assets/{name}", include_in_schema=False)(asset)
