"""`mnt-export train` and `mnt-export evaluate` (registered on the mnt-export group)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from mnt.export.errors import ExportError
from mnt.export.model.config import PRESETS
from mnt.runtime import options


def _say(line: str) -> None:
    click.echo(line, err=True)


def _threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


@click.command("train")
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of talking-head clips, one person per clip (self-reenactment pairs "
                   "come from within a clip).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoint.safetensors, train_state.safetensors (resume), "
                   "losses.jsonl, samples/. Rerunning the same command resumes.")
@click.option("--data-cache", type=click.Path(file_okay=False, path_type=Path),
              help="Where landmarks and crops are cached (default: OUT/data).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="Model size; 'small' (tiny's widths at 128x128) trains on a CPU.")
@click.option("--steps", type=click.IntRange(min=0), default=3000, show_default=True,
              help="Generator steps in all (a resumed run goes on to this count).")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--targets", "k", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Targets per sample, K (the paper trains with 4).")
@click.option("--lr-generator", type=float, default=5e-5, show_default=True, help="Adam, paper: 5e-5.")
@click.option("--lr-discriminator", type=float, default=2e-4, show_default=True, help="Adam, paper: 2e-4.")
@click.option("--disentangler-steps", type=click.IntRange(min=0), default=400, show_default=True)
@click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True,
              help="Share of every clip (its end) held back from training, for `evaluate`.")
@click.option("--vgg19", type=click.Path(dir_okay=False, path_type=Path),
              help="torchvision's vgg19-dcbb9e9d.pth for the perceptual loss; without it a "
                   "face-weighted pixel L1 stands in.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sample-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Write samples/step-N.png every this many steps.")
@click.option("--save-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Save the state and the checkpoint every this many steps.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all cores).")
@click.option("--restart", is_flag=True, help="Discard OUT's saved state and start again.")
def train(videos: Path, out: Path, data_cache: Path | None, preset: str, steps: int, batch: int, k: int,
          lr_generator: float, lr_discriminator: float, disentangler_steps: int, holdout: float,
          vgg19: Path | None, seed: int, sample_every: int, save_every: int, threads: int | None,
          restart: bool) -> None:
    """Train a MarioNETte checkpoint by self-reenactment on VIDEOS (paper, supplement A4 and B).

    Example: mnt-export train --videos clips/ --out run/ --steps 3000. The landmark
    disentangler is trained first, then the generator against a projection discriminator.
    Ctrl-C saves the state; the same command resumes.
    """
    from mnt.export.train.dataset import find_videos, prepare
    from mnt.export.train.state import STATE_FILE
    from mnt.export.train.trainer import CHECKPOINT_FILE, LOG_FILE, Settings, Trainer

    _threads(threads)
    settings = Settings(preset=preset, steps=steps, batch=batch, targets=k, lr_generator=lr_generator,
                        lr_discriminator=lr_discriminator, disentangler_steps=disentangler_steps, seed=seed)
    if restart:
        for name in (STATE_FILE, CHECKPOINT_FILE, LOG_FILE):
            (out / name).unlink(missing_ok=True)
    started = time.perf_counter()
    _say(f"preparing data from {videos}")
    dataset = prepare(find_videos(videos), data_cache or out / "data", PRESETS[preset].image_size,
                      holdout, stats=Trainer.stats_from_state(out), say=_say)
    counts = ", ".join(f"{c.name} {len(c.train)}/{len(c.held_back)}" for c in dataset.clips)
    _say(f"clips (training/held-back frames): {counts}; {time.perf_counter() - started:.0f} s")
    trainer = Trainer(dataset, out, settings, vgg19, say=_say)
    if trainer.resume():
        _say(f"resuming {out} at step {trainer.step}")
    trainer.run(sample_every=sample_every, save_every=save_every)
    _say(f"wrote {out / CHECKPOINT_FILE} after {trainer.step} steps "
         f"({(time.perf_counter() - started) / 60:.1f} min this run)")


@click.command("evaluate")
@options.checkpoint("the one to evaluate", required=True)
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The clips the checkpoint was trained on; their held-back ends are evaluated.")
@click.option("--data-cache", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The training run's data cache (OUT/data), or a new folder.")
@click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--targets", "ks", default="1,4", show_default=True, help="K values to evaluate.")
@click.option("--frames", type=click.IntRange(min=1), default=20, show_default=True,
              help="Held-back frames per clip (evenly spaced).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all cores).")
def evaluate(checkpoint: Path, videos: Path, data_cache: Path, holdout: float, ks: str, frames: int,
             json_out: Path | None, threads: int | None) -> None:
    """Self-reenactment metrics on held-back frames (paper Table 1: SSIM, PSNR and their
    face-masked variants), beside the trivial baseline of returning the target unchanged."""
    import json

    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.train.dataset import find_videos, prepare
    from mnt.export.train.evaluate import evaluate as run_evaluation
    from mnt.export.train.evaluate import markdown

    _threads(threads)
    try:
        k_values = sorted({int(k) for k in ks.split(",")})
    except ValueError as err:
        raise ExportError(f"--targets {ks!r} is not a comma-separated list of numbers") from err
    reference = load_checkpoint(checkpoint)
    dataset = prepare(find_videos(videos), data_cache, reference.config.image_size, holdout,
                      stats=reference.stats, say=_say)
    results = run_evaluation(reference, dataset, k_values, frames)
    click.echo(markdown(results))
    if json_out is not None:
        from mnt.runtime.files import atomic_path

        with atomic_path(json_out, error=ExportError) as temporary:
            temporary.write_text(json.dumps(results, indent=1))
