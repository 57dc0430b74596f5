"""The aiohttp app: the page at /, one WebSocket per tab at /ws, the tab's recordings at
/recordings/KEY/NAME (KEY: the tab's secret, so no other tab can guess it), and /status
(JSON: streams and tabs, for tests and monitors).

Protocol on /ws. Browser -> server: a binary message is a driver frame (JPEG); a text
message is JSON: {"type": "targets", "photos": [base64...], "names": [...]},
{"type": "astronaut"}, {"type": "mode", "mode": "paste-back"}, {"type": "record", "on": bool}.
Server -> browser, JSON: "ready" (with the limits: the page checks them before sending),
"targets" (the aligned crops as base64 JPEG, and notes), "frame" (server times in ms; "face": false
while none was seen), "recording" (a download URL), "error" (one line). A "frame" with a
face is followed by one binary message: the driver crop's JPEG length (4 bytes,
big-endian), that JPEG, then the output frame's JPEG. The browser sends its next frame
only after the answer, so latency stays one frame's.
A message over MAX_MESSAGE gets an "error" and the tab lives on; past MAX_MESSAGE + SLACK
aiohttp closes the socket (1009) rather than hold more of it in memory."""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import secrets
import tempfile
from pathlib import Path

from aiohttp import WSMessage, WSMsgType, web

from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.hub import Hub
from mnt.runtime.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from mnt.runtime.web.tab import Tab

PAGE = Path(__file__).with_name("page.html")
MAX_MESSAGE = 64 * 2**20  # 8 target photos of a few MB each, base64
SLACK = 16 * 2**20  # a message this far over the limit is still read, to be refused in words

HUB, TABS, FOLDER = web.AppKey("hub", Hub), web.AppKey("tabs", dict), web.AppKey("folder", Path)


def make_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=MAX_MESSAGE)
    app[HUB], app[TABS] = hub, {}
    app.router.add_get("/", _page)
    app.router.add_get("/status", _status)
    app.router.add_get("/ws", _socket)
    app.router.add_get("/recordings/{key}/{name}", _recording)
    app.cleanup_ctx.append(_recordings_folder)
    app.on_shutdown.append(_close_sockets)
    return app


async def _recordings_folder(app: web.Application):
    with tempfile.TemporaryDirectory(prefix="mnt-web-") as folder:
        app[FOLDER] = Path(folder)
        yield


async def _close_sockets(app: web.Application) -> None:
    for socket in [tab_socket for _, tab_socket in app[TABS].values()]:
        await socket.close(message=b"server stopping")


async def _page(request: web.Request) -> web.Response:
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})


async def _status(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response({"streams": len(hub.streams), "tabs": len(request.app[TABS]),
                              "max_streams": hub.max_streams})


async def _recording(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    tab = next((tab for tab, _ in request.app[TABS].values() if secrets.compare_digest(tab.key, key)), None)
    path = tab.recording(request.match_info["name"]) if tab else None
    if path is None:
        raise web.HTTPNotFound(text="no such recording (it is dropped when its tab closes)")
    return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})


_tab_ids = itertools.count(1)


async def _socket(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE + SLACK, heartbeat=20)
    await socket.prepare(request)
    app = request.app
    tab = Tab(app[HUB], str(next(_tab_ids)), app[FOLDER])
    app[TABS][tab.id] = (tab, socket)
    try:
        lo, hi = app[HUB].model.target_range
        await socket.send_json({"type": "ready", "tab": tab.id, "size": app[HUB].size, "photos": [lo, hi],
                                "max_message": MAX_MESSAGE, "max_photo_bytes": MAX_IMAGE_BYTES,
                                "max_pixels": MAX_IMAGE_PIXELS})
        async for message in socket:
            if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            try:
                _check_size(message)
                if message.type == WSMsgType.BINARY:
                    await _frame(socket, tab, message.data)
                else:
                    await _command(socket, tab, message.data)
            except MntError as err:
                await socket.send_json({"type": "error", "message": err.one_line()})
            except ConnectionError:  # (the tab went away)
                raise
            except Exception as err:  # a bug: said on the page and the server's log, the tab lives on
                logging.getLogger(__name__).exception("mnt-web: internal error")
                await socket.send_json({"type": "error", "message": f"internal error: {type(err).__name__}: "
                                        f"{err} (please report it)"})
    finally:
        del app[TABS][tab.id]
        # (in a thread: hub.end waits for a frame still running; shielded: aiohttp cancels the
        # handler of a closed connection, and the tab must close all the same)
        await asyncio.shield(asyncio.to_thread(tab.close))
    return socket


def _check_size(message: WSMessage) -> None:
    size = len(message.data)  # (text: base64 and JSON, one byte a character)
    if size > MAX_MESSAGE:
        what = "frame" if message.type == WSMsgType.BINARY else "message"
        raise RuntimeStageError(f"a {what} of {size / 2**20:.1f} MiB is over the limit of "
                                f"{MAX_MESSAGE // 2**20} MiB", hint="send fewer or smaller photos "
                                f"({MAX_IMAGE_BYTES // 2**20} MiB each at most)")


async def _frame(socket: web.WebSocketResponse, tab: Tab, data: bytes) -> None:
    out = await asyncio.to_thread(tab.frame, data)
    if out is None:
        await socket.send_json({"type": "frame", "face": False})
        return
    crop, picture, ms = out
    await socket.send_json({"type": "frame", "face": True, "ms": ms})
    await socket.send_bytes(len(crop).to_bytes(4, "big") + crop + picture)


async def _command(socket: web.WebSocketResponse, tab: Tab, text: str) -> None:
    try:
        command = json.loads(text)
        if not isinstance(command, dict) or "type" not in command:
            raise ValueError("no type")
        kind = command["type"]
    except (ValueError, RecursionError) as err:
        raise RuntimeStageError(f"not a command: {text[:80]!r}",
                                hint='send JSON with a "type", or a frame as binary JPEG') from err
    if kind == "targets":
        names = command.get("names") or []
        if not isinstance(names, list):
            raise RuntimeStageError('"names" must be a list of the photos\' file names')
        photos, names = _photos(command), [str(n) for n in names]
        await _targets(socket, tab, photos, names)
    elif kind == "astronaut":
        await _targets(socket, tab, [await asyncio.to_thread(_astronaut)], ["astronaut.png"])
    elif kind == "mode":
        tab.set_mode(str(command.get("mode")))
        await socket.send_json({"type": "mode", "mode": tab.mode})
    elif kind == "record":
        name = await asyncio.to_thread(tab.record, bool(command.get("on")))
        await socket.send_json({"type": "recording", "on": name is None,
                                "url": None if name is None else f"/recordings/{tab.key}/{name}"})
    else:
        raise RuntimeStageError(f"unknown command {kind!r}",
                                hint="one of targets, astronaut, mode, record")


def _photos(command: dict) -> list[bytes]:
    photos = command.get("photos")
    if not isinstance(photos, list):
        raise RuntimeStageError('a "targets" command needs "photos": a list of base64 image files')
    try:
        return [base64.b64decode(photo, validate=True) for photo in photos]
    except (binascii.Error, TypeError, ValueError) as err:
        raise RuntimeStageError("target photos: not base64 data",
                                hint="send the files' bytes in base64") from err


async def _targets(socket: web.WebSocketResponse, tab: Tab, photos: list[bytes], names: list[str]) -> None:
    crops = await asyncio.to_thread(tab.set_targets, photos, names)
    await socket.send_json({"type": "targets", "names": tab.names, "notes": tab.notes,
                            "crops": [base64.b64encode(crop).decode() for crop in crops]})


def _astronaut() -> bytes:
    """The built-in target: the demo's astronaut photo, written once into the cache."""
    from mnt.runtime.defaults import cache_folder
    from mnt.runtime.demo import demo_targets

    return (demo_targets(cache_folder("demo")) / "astronaut.png").read_bytes()
