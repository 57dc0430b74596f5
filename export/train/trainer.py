"""The training run: landmark disentangler first (supplement B), then the generator and
the discriminator adversarially (supplement A4). Resumable from the run folder; writes a
project-format checkpoint, a loss log and sample images as it goes (rank 0 of a
distributed run; every rank draws the same global batch and trains on its share)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mnt.export.errors import ExportError
from mnt.export.model.checkpoint import Reference, save_checkpoint
from mnt.export.model.config import PRESETS
from mnt.export.model.disentangler import LandmarkDisentangler
from mnt.export.model.marionette import MarioNETte
from mnt.export.train import losses
from mnt.export.train.dataset import Batch, Dataset, make_batch, same_clip, training_picks
from mnt.export.train.discriminator import Discriminator
from mnt.export.train.distributed import Context
from mnt.export.train.runlog import RunLog, trim
from mnt.export.train.state import STATE_FILE, load_state, save_state
from mnt.runtime.files import atomic_path
from mnt.runtime.landmarks import LandmarkStats, normalize

CHECKPOINT_FILE = "checkpoint.safetensors"
CPU = Context(torch.device("cpu"))
FACE_WEIGHT = 4.0  # the face term near 1.5x the pixel term's size (0.48 against 0.137 x 10)
# The output's tanh is pushed out of saturation past this pre-activation: there no other loss
# reaches it (the earlier demo model's top-left corner sat at up to 21, tanh's slope 1e-18,
# and stayed a red patch through its 4900 steps of L1).
SATURATION = 3.0


@dataclass(frozen=True)
class Settings:
    """Defaults follow the paper (Adam, D 2e-4, G 5e-5; λP 10, λFM 10; one D step per G
    step), except K (paper: 4) and the batch, which a CPU run keeps small."""

    preset: str = "small"
    steps: int = 3000
    batch: int = 4
    targets: int = 2
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-4
    lambda_perceptual: float = 10.0  # λP, on VGG19 features or, without them, on pixels
    lambda_face: float = FACE_WEIGHT  # the face term, on dlib's face network (0: none)
    # The saturation term: a hinge, zero once the output is back in tanh's range. Its pixels
    # are few (16 of 16384 in the red corner), so it is weighted ~100x the pixel L1 per pixel.
    lambda_saturation: float = 1000.0
    lambda_feature_matching: float = 10.0  # λFM
    flip: bool = True  # mirror half the samples
    schedule: str = "constant"  # or "cosine": both rates fall to 10 % at `steps`
    disentangler_steps: int = 400
    disentangler_batch: int = 32
    lr_disentangler: float = 3e-4
    seed: int = 0
    init: str = ""  # the checkpoint a run started from (its weights), if any

    def run_key(self) -> dict[str, object]:
        """What must match to resume a run (the step count may grow)."""
        return {k: v for k, v in asdict(self).items() if k != "steps"}

    def rate(self, step: int) -> float:
        """The learning rates' factor at `step` (of `steps`)."""
        if self.schedule == "constant":
            return 1.0
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(step / max(self.steps, 1), 1.0)))


def _tensors(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in vars(batch).items()}


def fit_disentangler(model: LandmarkDisentangler, dataset: Dataset, settings: Settings,
                     say: Callable[[str], None], device: torch.device = CPU.device) -> None:
    """Supplement B: MSE on normalised coefficients, Adam 3e-4, gradients clipped at norm 1.
    Samples are training frames in both crops (targets and drivers reach M at run time).
    Trains `model` in place (one process: it is small, and its BatchNorm sees whole batches)."""
    model.train()
    rows, offsets, alphas = [], [], []  # rows: (clip, crop, frame), the images read per batch
    for c, clip in enumerate(dataset.clips):
        train = clip.train
        alpha = dataset.coefficients(clip)[train]
        for crop, points in enumerate((clip.target_landmarks, clip.driver_landmarks)):
            rows.append(np.stack([np.full(len(train), c), np.full(len(train), crop), train], axis=1))
            offsets.append(np.stack([(normalize(p, dataset.stats.mean)[0] - dataset.stats.mean).ravel()
                                     for p in points[train]]))
            alphas.append(alpha)
    row_all, offset_all = np.concatenate(rows), np.concatenate(offsets).astype(np.float32)
    alpha_all = torch.from_numpy(np.concatenate(alphas).astype(np.float32)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr_disentangler)
    rng = np.random.default_rng(settings.seed)
    say(f"landmark disentangler: {len(row_all)} samples, {settings.disentangler_steps} steps")
    for step in range(1, settings.disentangler_steps + 1):
        pick = rng.choice(len(row_all), size=min(settings.disentangler_batch, len(row_all)),
                          replace=False)
        crops = np.stack([(dataset.clips[c].target_images, dataset.clips[c].driver_images)[crop][t]
                          for c, crop, t in row_all[pick]])
        x = torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
        prediction = model(x.to(device), torch.from_numpy(offset_all[pick]).to(device))
        loss = torch.nn.functional.mse_loss(prediction, alpha_all[pick])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == settings.disentangler_steps:
            say(f"  disentangler step {step}/{settings.disentangler_steps}  mse {loss.item():.3f}")
    model.eval()


class Trainer:
    """One run folder: state, checkpoint, loss log, samples/."""

    def __init__(self, dataset: Dataset, out: Path, settings: Settings, vgg19: Path | None = None,
                 say: Callable[[str], None] = print, context: Context = CPU,
                 init: Reference | Path | None = None) -> None:
        """`init`: a checkpoint whose generator and disentangler weights a new run starts
        from, or a run's training state (every network and both optimisers: the run goes on
        with this one's settings)."""
        self.dataset, self.out, self.settings, self.context = dataset, out, settings, context
        self.say = say if context.main else lambda _: None
        config = PRESETS[settings.preset]
        if config.image_size != dataset.size:
            raise ExportError(f"the data was prepared at {dataset.size}px, the {settings.preset} "
                              f"preset needs {config.image_size}px")
        if settings.batch % context.world:
            raise ExportError(f"--batch {settings.batch} does not split over {context.world} processes",
                              hint=f"give a multiple of {context.world} (the batch is the global one)")
        if isinstance(init, Reference) and init.config != config:
            raise ExportError(f"--init {settings.init} is not a {settings.preset} checkpoint",
                              hint="give the --preset it was trained with")
        self.disentangler_done = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self.generator = MarioNETte(config).train()
            self.discriminator = Discriminator(config, len(dataset.identities)).train()
            torch.manual_seed(settings.seed)
            self.disentangler = LandmarkDisentangler(config).eval()
        if isinstance(init, Reference):
            self.generator.load_state_dict(init.generator.state_dict())
            self.disentangler.load_state_dict(init.disentangler.state_dict())
        for module in self._modules().values():
            module.to(context.device)
        self._logits: torch.Tensor | None = None  # the output's pre-tanh values, last forward
        self.generator.decoder.out.register_forward_hook(lambda _m, _i, out: setattr(self, "_logits", out))
        # Adam; the paper does not state betas: BigGAN's (0, 0.999), whose blocks it uses.
        self.opt_g = torch.optim.Adam(self.generator.parameters(), settings.lr_generator, betas=(0.0, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), settings.lr_discriminator,
                                      betas=(0.0, 0.999))
        if isinstance(init, Path):
            self._continue(init)
        self.vgg = losses.VGG19Features(vgg19).to(context.device) if vgg19 is not None else None
        self.face = None
        if settings.lambda_face > 0:
            from mnt.export.train.face_network import FaceNetwork, network_file

            self.face = FaceNetwork(network_file()).to(context.device)
        self.scaler = context.scaler()
        self.step = 0
        self._set_rates()

    # --- state -----------------------------------------------------------------------
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "disentangler": self.disentangler}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def perceptual_networks(self) -> str:
        general = "VGG19 (ImageNet)" if self.vgg is not None else "face-weighted pixel L1 (no VGG19)"
        face = f", dlib's face network x{self.settings.lambda_face:g}" if self.face is not None else ""
        return general + face

    def _continue(self, path: Path) -> None:
        """Every network and optimiser from another run's state (at this run's rates: every
        step sets them)."""
        _, header = load_state(path, self._modules(), self._optimizers())
        if header.get("clips") != [c.name for c in self.dataset.clips]:
            raise ExportError(f"--init {path} was trained on other clips (its discriminator knows "
                              f"{len(header.get('clips', []))} people)",
                              hint="give a checkpoint instead (the discriminator then starts afresh)")
        self.disentangler_done = bool(header["disentangler_done"])

    def save(self) -> None:
        if not self.context.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        header = {"step": self.step, "disentangler_done": self.disentangler_done,
                  "settings": asdict(self.settings), "clips": [c.name for c in self.dataset.clips],
                  "scaler": self.scaler.state_dict()}
        stats = {k: torch.from_numpy(np.asarray(getattr(self.dataset.stats, k), np.float64).copy())
                 for k in ("mean", "basis", "coef_mean", "coef_std")}
        save_state(self.out / STATE_FILE, self._modules(), self._optimizers(), stats, header)
        note = (f"trained by mnt-export train: {self.step} steps of {self.settings.preset}, "
                f"K={self.settings.targets}, batch {self.settings.batch}, Adam G "
                f"{self.settings.lr_generator:g} D {self.settings.lr_discriminator:g}, clips "
                f"{', '.join(c.name for c in self.dataset.clips)}; perceptual networks: "
                f"{self.perceptual_networks()}" + (f"; started from {self.settings.init}"
                                                   if self.settings.init else ""))
        config = self.generator.config
        generator, disentangler = MarioNETte(config), LandmarkDisentangler(config)  # on the CPU
        generator.load_state_dict(self.generator.state_dict())
        disentangler.load_state_dict(self.disentangler.state_dict())
        save_checkpoint(Reference(self.generator.config, generator.eval(), disentangler.eval(),
                                  self.dataset.stats), self.out / CHECKPOINT_FILE, note=note)

    def resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.is_file():
            return False
        _, header = load_state(path, self._modules(), self._optimizers())
        saved = Settings(**header["settings"])
        clips = [c.name for c in self.dataset.clips]
        if saved.run_key() != self.settings.run_key() or header["clips"] != clips:
            changed = sorted(k for k, v in self.settings.run_key().items() if saved.run_key()[k] != v)
            raise ExportError(f"{self.out} holds a run with other settings ({', '.join(changed) or 'clips'})",
                              hint="use another --out, the same settings, or --restart")
        self.step, self.disentangler_done = int(header["step"]), bool(header["disentangler_done"])
        if header.get("scaler"):  # fp16's loss scale (empty in other precisions)
            self.scaler.load_state_dict(header["scaler"])
        if self.context.main:
            trim(self.out, self.step)
        return True

    @staticmethod
    def stats_from_state(where: Path) -> LandmarkStats | None:
        """The statistics a run folder's (or a state file's) state was trained with (so
        resuming reuses its crops)."""
        path = where / STATE_FILE if where.is_dir() else where
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        t = load_file(str(path))
        names = ("mean", "basis", "coef_mean", "coef_std")
        return LandmarkStats(**{k: t[f"extra.{k}"].numpy() for k in names})

    # --- training --------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One D and one G update on this process's share of the batch; -> the whole batch's
        losses (averaged over the processes)."""
        t, ctx, scaler = _tensors(batch, self.context.device), self.context, self.scaler
        with ctx.autocast():
            fake = self.generator(t["driver_landmarks"], t["targets"], t["target_landmarks"])
            # Discriminator: hinge on real and (detached) fake, one update per generator update.
            real_score, real_features = self.discriminator(t["driver"], t["driver_landmarks"], t["identity"])
            fake_score, _ = self.discriminator(fake.detach(), t["driver_landmarks"], t["identity"])
            loss_d = losses.hinge_discriminator(real_score, fake_score)
        self.opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        ctx.average_gradients(self.discriminator.parameters())
        scaler.step(self.opt_d)
        # Generator: L_GAN + λP L_P + λFM L_FM.
        self.discriminator.requires_grad_(False)
        with ctx.autocast():
            fake_score, fake_features = self.discriminator(fake, t["driver_landmarks"], t["identity"])
            gan = losses.hinge_generator(fake_score)
            fm = losses.feature_matching(real_features, fake_features)
            if self.vgg is not None:
                perceptual = losses.perceptual(self.vgg, fake, t["driver"], t["mask"])
            else:
                perceptual = losses.pixel(fake, t["driver"], t["mask"])
            face = (losses.face_perceptual(self.face, fake.float(), t["driver"], t["face_box"])
                    if self.face is not None else torch.zeros(()))
            assert self._logits is not None
            saturation = F.relu(self._logits.float().abs() - SATURATION).mean()
            s = self.settings
            loss_g = (gan + s.lambda_perceptual * perceptual + s.lambda_face * face
                      + s.lambda_saturation * saturation + s.lambda_feature_matching * fm)
        self.discriminator.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        ctx.average_gradients(self.generator.parameters())
        scaler.step(self.opt_g)
        scaler.update()
        # Power iteration runs on every rank alike; rank 0's vectors keep them bit-identical.
        ctx.broadcast(b for m in (self.generator, self.discriminator) for b in m.buffers())
        return ctx.mean({"d": loss_d.item(), "g": loss_g.item(), "gan": gan.item(), "fm": fm.item(),
                         "perceptual": perceptual.item(), "face": face.item(),
                         "saturation": saturation.item(),
                         "l1": torch.nn.functional.l1_loss(fake.detach().float(), t["driver"]).item()})

    def batch(self) -> Batch:
        """This process's share of the step's global batch (step-seeded: a resumed or a
        distributed run draws the same samples)."""
        s, ctx = self.settings, self.context
        rng = np.random.default_rng([s.seed, self.step])
        picks = training_picks(self.dataset, rng, s.batch, s.targets)
        flips = rng.random(s.batch) < 0.5 if s.flip else np.zeros(s.batch, bool)
        mine = slice(ctx.rank * (s.batch // ctx.world), (ctx.rank + 1) * (s.batch // ctx.world))
        return make_batch(self.dataset, picks[mine], flips[mine])

    def _pretrain_disentangler(self) -> None:
        if self.context.main:
            try:
                fit_disentangler(self.disentangler, self.dataset, self.settings, self.say,
                                 self.context.device)
            except KeyboardInterrupt:
                self.say("interrupted during the landmark disentangler's pretraining (it is short and "
                         "starts again on resume); nothing saved")
                raise
        self.context.broadcast(self.disentangler.state_dict().values())
        self.disentangler_done = True
        self.save()

    def run(self, sample_every: int = 100, save_every: int = 200, log_every: int = 10) -> None:
        s = self.settings
        if not self.disentangler_done:
            self._pretrain_disentangler()
        self.disentangler.eval()
        if self.step >= s.steps:
            self.say(f"already trained for {self.step} steps (give more --steps to go on)")
            self.save()
            return
        self.say(f"generator: steps {self.step + 1}..{s.steps}, batch {s.batch} over {self.context.world} "
                 f"process(es) on {self.context.device} in {self.context.precision}, K={s.targets}, "
                 f"perceptual networks: {self.perceptual_networks()}")
        started, first = time.perf_counter(), self.step
        log = RunLog(self.out, self.step, self.say) if self.context.main else None
        try:
            while self.step < s.steps:
                self._set_rates()
                values = self.train_step(self.batch())
                self.step += 1
                if log is None:
                    continue
                log.write(self.step, values)
                if self.step % log_every == 0 or self.step == s.steps:
                    log.flush()
                    rate = (time.perf_counter() - started) / (self.step - first)
                    self.say(f"step {self.step}/{s.steps}  D {values['d']:.3f}  G {values['g']:.3f} "
                             f"(gan {values['gan']:.3f} fm {values['fm']:.3f} "
                             f"perceptual {values['perceptual']:.4f} face {values['face']:.4f})  "
                             f"l1 {values['l1']:.4f}  lr x{s.rate(self.step):.2f}  "
                             f"{rate:.2f} s/step, {rate * (s.steps - self.step) / 60:.0f} min left")
                if self.step % sample_every == 0 or self.step == s.steps:
                    self.sample()
                if self.step % save_every == 0:
                    self.save()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: exit 130 or 143 at the CLI
            self.save()
            self.say(f"interrupted at step {self.step}; state saved in {self.out} (run the same "
                     "command again to resume)")
            raise
        finally:
            if log is not None:
                log.close()
        self.save()

    def _set_rates(self) -> None:
        factor = self.settings.rate(self.step)
        for optimizer, rate in ((self.opt_g, self.settings.lr_generator),
                                (self.opt_d, self.settings.lr_discriminator)):
            for group in optimizer.param_groups:
                group["lr"] = rate * factor

    def sample(self) -> Path:
        """samples/step-N.png (rank 0): rows of target | driver landmarks | generated | ground
        truth, one row per clip, the driver a held-back frame (never trained on)."""
        k = self.settings.targets
        picks = [same_clip(c, int(clip.held_back[len(clip.held_back) // 2]), clip.spread_targets(k))
                 for c, clip in enumerate(self.dataset.clips)]
        batch = make_batch(self.dataset, picks)
        t = _tensors(batch, self.context.device)
        self.generator.eval()
        with torch.no_grad():
            fake = self.generator(t["driver_landmarks"], t["targets"], t["target_landmarks"])
        fake = fake.float().cpu().numpy()
        self.generator.train()
        rows = [np.concatenate([batch.targets[i, 0], batch.driver_landmarks[i], fake[i], batch.driver[i]],
                               axis=2) for i in range(len(picks))]
        grid = np.clip((np.concatenate(rows, axis=1).transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255)
        path = self.out / "samples" / f"step-{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(grid.astype(np.uint8), cv2.COLOR_RGB2BGR))
        assert ok
        with atomic_path(path) as temporary:
            temporary.write_bytes(encoded.tobytes())
        return path
