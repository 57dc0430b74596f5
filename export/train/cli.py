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
    """Default: the cores shared among this machine's processes of a torchrun job."""
    import torch

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_processes))


def _workers() -> int:
    return min(os.cpu_count() or 1, 4)


VIDEOS_HELP = ("Folder of talking-head clips, one person per clip, or VoxCeleb's layout: identity "
               "folders holding video folders holding clips (pairs drawn within an identity).")


@click.command("train")
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), required=True,
              help=VIDEOS_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoint.safetensors, train_state.safetensors (resume), "
                   "losses.jsonl, samples/. Rerunning the same command resumes.")
@click.option("--data-cache", type=click.Path(file_okay=False, path_type=Path),
              help="Where landmarks and crops are cached (default: OUT/data).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="Model size; 'small' (tiny's widths at 128x128) trains on a CPU.")
@click.option("--steps", type=click.IntRange(min=0), default=3000, show_default=True,
              help="Generator steps in all (a resumed run goes on to this count); 0 prepares "
                   "the data and stops.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--targets", "k", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Targets per sample, K (the paper trains with 4).")
@click.option("--lr-generator", type=float, default=5e-5, show_default=True, help="Adam, paper: 5e-5.")
@click.option("--lr-discriminator", type=float, default=2e-4, show_default=True, help="Adam, paper: 2e-4.")
@click.option("--disentangler-steps", type=click.IntRange(min=0), default=400, show_default=True)
@click.option("--face-weight", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Weight of the face perceptual term: L1 between dlib's face-network activations "
                   "of the generated and the real face (weights from face-recognition-models, in "
                   "the train extra; 0: off).")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Mirror half the training samples (images, landmarks and masks alike).")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant",
              show_default=True, help="Learning rates: constant, or cosine down to 10 % at --steps.")
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
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads per process (default: the cores over this machine's processes).")
@click.option("--workers", type=click.IntRange(min=1), default=_workers, show_default="min(cores, 4)",
              help="Processes that prepare the data (rank 0's, in a torchrun job).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: the GPU when PyTorch sees one (under torchrun, LOCAL_RANK's).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Mixed precision by autocast (fp16 with loss scaling); the weights stay float32.")
@click.option("--init", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Start a new run from a checkpoint's generator, disentangler and landmark "
                   "statistics (the discriminator starts afresh), or from another run's "
                   "train_state.safetensors (every network and optimiser go on, at this run's rates).")
@click.option("--restart", is_flag=True, help="Discard OUT's saved state and start again.")
def train(videos: Path, out: Path, data_cache: Path | None, preset: str, steps: int, batch: int, k: int,
          lr_generator: float, lr_discriminator: float, disentangler_steps: int, face_weight: float,
          flip: bool, schedule: str, holdout: float, vgg19: Path | None, seed: int, sample_every: int,
          save_every: int, threads: int | None, workers: int, device: str, precision: str,
          init: Path | None, restart: bool) -> None:
    """Train a MarioNETte checkpoint by self-reenactment on VIDEOS (paper, supplement A4 and B).

    Example: mnt-export train --videos clips/ --out run/ --steps 3000. The landmark
    disentangler is trained first, then the generator against a projection discriminator.
    Ctrl-C (or SIGTERM) in the generator's steps saves the state; the same command resumes
    (the disentangler's short pretraining starts again if stopped). Data-parallel on several GPUs or CPU
    processes: torchrun --nproc_per_node N --no-python mnt-export train ... (--batch is the
    global batch, split over the processes; on several machines, add torchrun's --nnodes and
    --rdzv-endpoint and keep OUT and the data cache on a file system they share).
    """
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.train.dataset import Dataset, find_videos, prepare
    from mnt.export.train.distributed import start, stop
    from mnt.export.train.runlog import LOG_FILE
    from mnt.export.train.state import STATE_FILE, is_state
    from mnt.export.train.trainer import CHECKPOINT_FILE, Settings, Trainer

    _threads(threads)
    context = start(device, precision)
    say = _say if context.main else (lambda _: None)
    try:
        settings = Settings(preset=preset, steps=steps, batch=batch, targets=k, lr_generator=lr_generator,
                            lr_discriminator=lr_discriminator, disentangler_steps=disentangler_steps,
                            lambda_face=face_weight, flip=flip, schedule=schedule,
                            seed=seed, init=str(init) if init else "")
        from_state = init is not None and is_state(init)
        reference = load_checkpoint(init) if init is not None and not from_state else None
        if restart and context.main:
            for name in (STATE_FILE, CHECKPOINT_FILE, LOG_FILE):
                (out / name).unlink(missing_ok=True)
        started = time.perf_counter()

        def load() -> Dataset:
            stats = (Trainer.stats_from_state(out) or (reference.stats if reference else None)
                     or (Trainer.stats_from_state(init) if from_state and init else None))
            return prepare(find_videos(videos), data_cache or out / "data", PRESETS[preset].image_size,
                           holdout, stats=stats, say=say, workers=workers if context.main else 1)

        # Rank 0 prepares; the others then read its cache.
        say(f"preparing data from {videos} ({workers} workers)")
        dataset = load() if context.main else None
        context.wait_for_main()
        dataset = dataset or load()
        counts = ", ".join(f"{c.name} {len(c.train)}/{len(c.held_back)}" for c in dataset.clips)
        say(f"{len(dataset.identities)} identities, {len(dataset.clips)} clips (training/held-back frames): "
            f"{counts}; {time.perf_counter() - started:.0f} s")
        if steps == 0:
            say("data prepared; --steps 0 trains nothing")
            return
        trainer = Trainer(dataset, out, settings, vgg19, say=_say, context=context,
                          init=init if from_state else reference)
        if trainer.resume():
            say(f"resuming {out} at step {trainer.step}")
        trainer.run(sample_every=sample_every, save_every=save_every)
        say(f"wrote {out / CHECKPOINT_FILE} after {trainer.step} steps "
            f"({(time.perf_counter() - started) / 60:.1f} min this run)")
    finally:
        stop(context)


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
@click.option("--workers", type=click.IntRange(min=1), default=_workers, show_default="min(cores, 4)",
              help="Processes that prepare the data.")
def evaluate(checkpoint: Path, videos: Path, data_cache: Path, holdout: float, ks: str, frames: int,
             json_out: Path | None, threads: int | None, workers: int) -> None:
    """Metrics on held-back frames in the paper's two settings: self-reenactment (its Table 1:
    SSIM, PSNR, their face-masked variants) and a different identity driving the targets (its
    Table 2), with CSIM, dlib's same-person rate and PRMSE by dlib's networks (the identity
    extra), beside the trivial baselines."""
    import json

    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.train.dataset import find_videos, prepare
    from mnt.export.train.evaluate import evaluate as run_evaluation
    from mnt.export.train.evaluate import markdown
    from mnt.export.train.identity import FaceMetrics

    _threads(threads)
    try:
        k_values = sorted({int(k) for k in ks.split(",")})
    except ValueError as err:
        raise ExportError(f"--targets {ks!r} is not a comma-separated list of numbers") from err
    reference = load_checkpoint(checkpoint)
    try:
        metrics = FaceMetrics()
    except ExportError as err:
        metrics = None
        _say(f"CSIM, same-person rate, PRMSE and the different-identity setting omitted: {err.one_line()}")
    dataset = prepare(find_videos(videos), data_cache, reference.config.image_size, holdout,
                      stats=reference.stats, say=_say, workers=workers)
    results = run_evaluation(reference, dataset, k_values, frames, metrics)
    click.echo(markdown(results))
    if json_out is not None:
        from mnt.runtime.files import atomic_path

        with atomic_path(json_out, error=ExportError) as temporary:
            temporary.write_text(json.dumps(results, indent=1))
