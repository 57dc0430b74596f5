"""mnt-web: the live page, reenacting the browser's webcam (or a video file) with photos
dropped on the page."""

from __future__ import annotations

from pathlib import Path

import click

from mnt.runtime import options
from mnt.runtime.backends import registry
from mnt.runtime.console import EXIT_CODES_EPILOG, GuardedCommand
from mnt.runtime.landmarkers import CHOICES as LANDMARKS


@click.command(name="mnt-web", cls=GuardedCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EXIT_CODES_EPILOG)
@options.artifacts()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Where to listen; 0.0.0.0 for every interface (browsers give the camera only "
                   "to localhost or HTTPS pages).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="The HTTP port.")
@click.option("--backend", type=click.Choice(registry.names()), default="auto", show_default=True,
              help="Inference engine, as mnt-run's.")
@click.option("--landmarks", type=click.Choice(LANDMARKS), default="auto", show_default=True,
              help="Face detection and landmarks, as mnt-run's.")
@click.option("--max-streams", type=click.IntRange(min=1), default=8, show_default=True,
              help="Browser tabs served at once; one beyond them is told so.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a frame after which a tab's stream is freed (it restarts "
                   "with the next frame).")
@options.verbose()
@options.version("mnt-web")
def main(artifacts: Path | None, host: str, port: int, backend: str, landmarks: str, max_streams: int,
         idle_timeout: float) -> None:
    """Serve the live page: open the printed address, drop 1 to 8 photos of a face (or pick
    the astronaut), start the camera. Stops cleanly on Ctrl-C or SIGTERM.

    Example: mnt-web, then open http://127.0.0.1:8080/.
    """
    from aiohttp import web

    from mnt.runtime.defaults import cache_folder, default_artifacts
    from mnt.runtime.hub import Hub
    from mnt.runtime.web.server import make_app

    def say(line: str) -> None:
        click.echo(line, err=True)

    folder = artifacts or default_artifacts(say)
    with Hub(folder, backend=backend, landmarks=landmarks, max_streams=max_streams, idle_s=idle_timeout,
             cache=cache_folder("targets"), say=say) as hub:
        app = make_app(hub)

        async def announce(_: web.Application) -> None:
            say(f"mnt-web: open http://{host}:{port}/ in a browser; Ctrl-C to stop")

        app.on_startup.append(announce)
        # aiohttp handles SIGINT and SIGTERM: the sockets close, then the hub.
        web.run_app(app, host=host, port=port, print=None, handle_signals=True)
        say(f"mnt-web: stopped; {len(hub.streams)} stream(s) ended")


if __name__ == "__main__":
    main()
