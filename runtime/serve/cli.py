"""mnt-serve: serve an artefact folder on a real Triton Inference Server, many streams on
one loaded model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from mnt.runtime import options
from mnt.runtime.backends import registry
from mnt.runtime.console import EXIT_CODES_EPILOG, GuardedCommand
from mnt.runtime.landmarkers import CHOICES as LANDMARKS


def _port(name: str, default: int) -> object:
    return click.option(f"--{name}-port", type=click.IntRange(1, 65535), default=default, show_default=True,
                        help=f"The {dict(http='HTTP', grpc='gRPC').get(name, name)} port.")


@click.command(name="mnt-serve", cls=GuardedCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EXIT_CODES_EPILOG)
@options.artifacts()
@click.option("--backend", type=click.Choice(registry.names()), default="auto", show_default=True,
              help="Inference engine, as mnt-run's.")
@click.option("--landmarks", type=click.Choice(LANDMARKS), default="auto", show_default=True,
              help="Face detection and landmarks, as mnt-run's.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Where to listen; 0.0.0.0 for every interface (behind a load balancer).")
@_port("http", 8000)
@_port("grpc", 8001)
@_port("metrics", 8002)
@click.option("--max-streams", type=click.IntRange(min=1), default=16, show_default=True,
              help="Streams served at once; a start beyond them is refused.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a frame after which a stream is ended and its state freed "
                   "(a client that went away).")
@click.option("--instances", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests run at once (each on its stream's own state).")
@click.option("--triton-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Write Triton's own log to this file (default: a file in the temporary folder, "
                   "named when the server starts).")
@options.verbose()
@options.version("mnt-serve")
def main(artifacts: Path | None, backend: str, landmarks: str, address: str, http_port: int, grpc_port: int,
         metrics_port: int, max_streams: int, idle_timeout: float, instances: int,
         triton_log: Path | None) -> None:
    """Serve the `mnt_reenact` model: a stream starts with its target photos, sends one
    driver frame per request and ends (see the README's "Serving"). Stops cleanly on
    Ctrl-C or SIGTERM.

    Example: mnt-serve --artifacts artefacts/, then mnt-run driver.mp4 --targets photos/
    --server grpc://127.0.0.1:8001.
    """
    from mnt.runtime.defaults import default_artifacts
    from mnt.runtime.hub import Hub
    from mnt.runtime.serve.server import Server

    def say(line: str) -> None:
        click.echo(line, err=True)

    verbose = options.verbose_requested(click.get_current_context())
    folder = artifacts or default_artifacts(say)
    log = triton_log or Path(tempfile.gettempdir()) / f"mnt-serve-{os.getpid()}.triton.log"
    with Hub(folder, backend=backend, landmarks=landmarks, max_streams=max_streams, idle_s=idle_timeout,
             say=say) as hub, \
            Server(hub, http_port, grpc_port, metrics_port, address, instances, log, verbose) as server:
        say(f"serving {folder} as mnt_reenact: {server.urls['grpc']} (gRPC), {server.urls['http']} (HTTP); "
            f"Ctrl-C to stop (Triton's log: {log})")
        try:
            server.wait()
        finally:
            say(f"stopping: {len(hub.streams)} stream(s) ended")
