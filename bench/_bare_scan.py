"""The ceiling for bench.kiosk's scan links: the same 302 from a bare Starlette app, nothing stored.

python -m bench._bare_scan PORT CODES_FILE

Same uvicorn settings as the agent's web server (edge_agent/wiring/web.py: default loop and HTTP
implementation, no access log), same route shape (`GET /s/{code}`), same redirect target (the product URL
template filled from an in-memory table), and a 404 for an unknown code; no middleware, no session, no
event, no database. What the agent serves against this is the share of a bare server's throughput it keeps
while recording every scan durably (`scan_vs_bare`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

TEMPLATE = "https://m.example.cn/p/{sku}?store={store_id}&tag={tag_id}"


def make_app(codes: list[str]) -> Starlette:
    # The seeded store pairs code i with sku i (bench.tags.seed_store); the tag id is the code's index in hex.
    targets = {code: TEMPLATE.format(sku=f"sku-{i:05d}", store_id="bench-store", tag_id=f"{i:016x}")
               for i, code in enumerate(codes)}

    async def scan(request: Request) -> Response:
        target = targets.get(request.path_params["code"])
        if target is None:
            return PlainTextResponse("unknown code", status_code=404)
        return RedirectResponse(target, status_code=302)

    return Starlette(routes=[Route("/s/{code}", scan), Route("/healthz", lambda r: PlainTextResponse("ok"))])


def main() -> None:
    port, codes_file = int(sys.argv[1]), Path(sys.argv[2])
    app = make_app(codes_file.read_text().split())
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
