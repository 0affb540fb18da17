"""The view's HTTP server: Starlette routes over mmad.view.payloads, served by uvicorn on 127.0.0.1.

Routes: `/` the page, `/static/*` its assets (shipped in the package), `/api/runs.json`,
`/api/summary/<run>.json`, `/api/run/<run>.json`, `/api/text/<run>.json` (its answer texts),
`/api/item/<run>/<row>.json`,
`/api/image/<run>/<row>/<n>` (an image as sent), `/api/thumb/<run>/<row>`, `/api/verdict/<a>/<b>.json`.
Only hosts naming the loopback are answered (a web page elsewhere cannot read your results through
a rebound DNS name). Handlers are plain functions: Starlette runs them on its thread pool, so a slow
run never blocks the others.
"""

from __future__ import annotations

import json
import math
import socket
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mmad.errors import ConfigError, MmadError
from mmad.view.payloads import NotFound, ViewData

STATIC = Path(str(resources.files("mmad.view").joinpath("static")))


def dumps(payload: object) -> str:
    """JSON for the browser: NaN and infinities (which JSON lacks) become null."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"), default=str)
    except ValueError:
        return json.dumps(_clean(payload), separators=(",", ":"), default=str)


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _json(payload: object) -> Response:
    return Response(dumps(payload), media_type="application/json", headers={"Cache-Control": "no-store"})


def create_app(data: ViewData) -> Starlette:
    def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def guarded(handler):
        def endpoint(request: Request) -> Response:
            try:
                return handler(request.path_params)
            except NotFound as exc:
                return Response(str(exc), status_code=404, media_type="text/plain")
            except MmadError as exc:  # a result file that cannot be read: its one line, for the page
                return Response(str(exc), status_code=422, media_type="text/plain")
            except ValueError as exc:
                return Response(str(exc), status_code=400, media_type="text/plain")
        return endpoint

    def _cached(name: str, make) -> Response:
        rid = name.split("/")[1]
        text = data.encoded(name, make, data.run(rid).signature(), dumps)
        return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})

    def image(params) -> Response:
        body, media_type = data.image(params["rid"], int(params["row"]), int(params["index"]))
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=60"})

    routes = [
        Route("/", page),
        Route("/api/runs.json", guarded(lambda p: _json(data.runs()))),
        Route("/api/summary/{rid}.json", guarded(lambda p: _json(data.summary(p["rid"])))),
        Route("/api/run/{rid}.json", guarded(lambda p: _cached(f"run/{p['rid']}", lambda: data.run_payload(p["rid"])))),
        Route("/api/text/{rid}.json", guarded(lambda p: _cached(f"text/{p['rid']}", lambda: data.text_payload(p["rid"])))),
        Route("/api/item/{rid}/{row:int}.json", guarded(lambda p: _json(data.item(p["rid"], p["row"])))),
        Route("/api/image/{rid}/{row:int}/{index:int}", guarded(image)),
        Route("/api/thumb/{rid}/{row:int}",
              guarded(lambda p: Response(data.thumb(p["rid"], p["row"]), media_type="image/png",
                                         headers={"Cache-Control": "max-age=60"}))),
        Route("/api/verdict/{a}/{b}.json", guarded(lambda p: _json(data.verdict(p["a"], p["b"])))),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # no compression: on the loopback it would cost more time than the bytes it saves
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])]
    return Starlette(routes=routes, middleware=middleware)


def bind(port: int, *, fallback: bool) -> socket.socket:
    """A listening socket on 127.0.0.1:port; a taken port is a ConfigError unless `fallback` (then
    the system picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        if not fallback:
            sock.close()
            raise ConfigError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                              f"--port 0 picks a free port") from None
        sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(data: ViewData, sock: socket.socket) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn
    config = uvicorn.Config(create_app(data), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
