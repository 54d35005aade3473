"""`grn up`'s server: it starts at once, so `/readyz` always answers, while a thread runs the
preparation (`service.usecases.bringup`: archive, schema, import, model, index). Until the
preparation is done `/readyz` answers 503 with the step under way or the one line that says
what to fix; settings that leave the service unsafe (production without a strong API key)
start no preparation and no API: the server answers 503 with that line until restarted with
other settings.
"""

from __future__ import annotations

import logging
import shlex
import threading
from typing import Any

from service.settings import Settings
from service.usecases.bringup import Options, Preparation, prepare_until_done, say


class ReadinessGate:
    """An ASGI wrapper: `/readyz` answers 503 with the preparation's state until it is done;
    everything else goes to the app."""

    def __init__(self, app: Any, state: Preparation) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/readyz" and not self.state.done:
            await not_ready(self.state.message())(scope, receive, send)
            return
        await self.app(scope, receive, send)


def not_ready(message: str) -> Any:
    from service.api.bodies import error_response

    return error_response(503, "not_ready", message, [message])


class QuietWhilePreparing(logging.Filter):
    """Drops the runtime's "not swapping: no model / no index yet" warnings, which its poller
    repeats every few seconds, until the preparation is done: they are expected then, and
    the preparation's own lines say how far it got."""

    def __init__(self, state: Preparation) -> None:
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        return self.state.done or not record.getMessage().startswith("not swapping")


class RefusingApp:
    """What `grn up` serves when its settings are unsafe: /healthz, and 503 with the reason
    everywhere else (no admin endpoint, no data)."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            from starlette.responses import JSONResponse

            await JSONResponse({"status": "ok"})(scope, receive, send)
            return
        await not_ready(f"not started: {self.message}")(scope, receive, send)


def train_options_from(text: str) -> list[str]:
    return shlex.split(text)


def serve_prepared(settings: Settings, options: Options) -> None:
    """Check the settings, start the preparation thread and serve until stopped."""
    import uvicorn

    from service.api.app import create_app
    from service.api.security import InsecureSettingsError, check_production

    app: Any
    stop = threading.Event()
    try:
        check_production(settings)
    except InsecureSettingsError as exc:
        say(f"error: {exc}")
        app = RefusingApp(str(exc))
    else:
        state = Preparation()
        app = ReadinessGate(create_app(settings), state)
        logging.getLogger("grn.runtime").addFilter(QuietWhilePreparing(state))
        threading.Thread(
            target=prepare_until_done,
            args=(settings, options, state),
            kwargs={"stop": stop},
            name="grn-up",
            daemon=True,
        ).start()
    say(f"serving on http://{settings.server.host}:{settings.server.port} while preparing")
    try:
        uvicorn.run(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_level="info",
            access_log=False,
            timeout_keep_alive=int(settings.server.keep_alive_seconds),
        )
    finally:
        stop.set()
