"""The reference trainer: landmark statistics, data from real clips, a few real training
steps whose loss goes down, exact resumption, the evaluation and its baselines, and the
shipped demo model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mnt.export.cli import main as export_cli
from mnt.export.errors import ExportError
from mnt.export.model.config import PRESETS
from mnt.export.model.landmark_prior import mean_face
from mnt.export.train import losses
from mnt.export.train.dataset import find_videos, make_batch, prepare, training_picks
from mnt.export.train.discriminator import Discriminator
from mnt.export.train.evaluate import METHODS, SELF, evaluate, image_metrics
from mnt.export.train.ondisk import Rows
from mnt.export.train.stats import coefficients, fit_stats, identity
from mnt.runtime.landmarks import EXPRESSION_GROUPS, N_EXPRESSION
from tests.helpers import SHARED_DATA

SMALL = PRESETS["small"]
needs_clips = pytest.mark.skipif(not (SHARED_DATA / "driving").exists(),
                                 reason="needs ../shared/data/driving beside the checkout")


def test_statistics_find_a_planted_mouth_expression():
    """Three identities whose mouths open along one direction: the mouth group's first
    basis row is that direction, and every frame's coefficients are recovered."""
    rng = np.random.default_rng(0)
    mouth = np.array(EXPRESSION_GROUPS["mouth"][0])
    direction = np.zeros((68, 3))
    direction[mouth[len(mouth) // 2:], 1] = 1.0  # lower lip points move down
    direction /= np.linalg.norm(direction)
    clips, planted = [], []
    for _ in range(3):
        face = mean_face() + 0.03 * rng.standard_normal((68, 3))  # an identity
        amounts = rng.uniform(-0.1, 0.1, 40)
        planted.append(amounts)
        clips.append(np.stack([face + a * direction + 1e-4 * rng.standard_normal((68, 3))
                               for a in amounts]) * 80 + 200)
    stats = fit_stats(clips)
    np.testing.assert_allclose(stats.basis @ stats.basis.T, np.eye(N_EXPRESSION), atol=1e-9)
    names = list(EXPRESSION_GROUPS)
    first_mouth_row = sum(EXPRESSION_GROUPS[name][1] for name in names[:names.index("mouth")])
    # (normalisation rescales each face, so the direction is not kept exactly)
    assert abs(stats.basis[first_mouth_row] @ direction.ravel()) > 0.95
    alpha = np.concatenate([coefficients(stats, c, identity(stats, c)) for c in clips])
    assert abs(np.corrcoef(alpha[:, first_mouth_row], np.concatenate(planted))[0, 1]) > 0.99
    np.testing.assert_allclose(alpha.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(alpha.std(axis=0), 1, atol=1e-6)


def test_discriminator_scores_patches_with_spectral_norm_everywhere():
    d = Discriminator(SMALL, identities=3)
    scores, features = d(torch.zeros(2, 3, 128, 128), torch.zeros(2, 3, 128, 128), torch.tensor([0, 2]))
    assert scores.shape == (2, 1, 4, 4) and len(features) == 5
    plain = [name for name, m in d.named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))
             and not hasattr(m, "parametrizations")]
    assert plain == []


def test_vgg19_perceptual_loss_reads_torchvision_weights(tmp_path):
    """The optional perceptual network loads torchvision's file layout without unpickling
    code; the loss is zero for identical images and grows with the difference."""
    layers = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]
    widths = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512]
    state, cin = {}, 3
    for index, width in zip(layers, widths, strict=True):
        state[f"features.{index}.weight"] = 0.05 * torch.randn(width, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(width)
        cin = width
    state["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / losses.VGG19_FILE)
    network = losses.VGG19Features(tmp_path / losses.VGG19_FILE)
    image, mask = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, 1, 64, 64)
    assert losses.perceptual(network, image, image, mask).item() == 0.0
    assert losses.perceptual(network, image.flip(-1), image, mask).item() > 0.0
    (tmp_path / "bad.pth").write_bytes(b"not a weights file")
    with pytest.raises(ExportError, match="cannot read VGG19 weights"):
        losses.VGG19Features(tmp_path / "bad.pth")


def test_metrics_and_their_face_mask():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    same = image_metrics(truth, truth, mask)
    assert same["SSIM"] == pytest.approx(1.0) and same["M-SSIM"] == pytest.approx(1.0)
    assert same["PSNR"] == same["M-PSNR"] == float("inf")
    outside = truth.copy()
    outside[:8] = 255 - outside[:8]  # damage only rows outside the mask
    damaged = image_metrics(outside, truth, mask)
    assert damaged["M-PSNR"] == float("inf") and damaged["PSNR"] < 20
    shifted = np.clip(truth.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = ((shifted.astype(float) - truth) ** 2).mean()
    assert image_metrics(shifted, truth, mask)["PSNR"] == pytest.approx(10 * np.log10(255**2 / mse))


def test_training_needs_two_readable_videos(tmp_path):
    with pytest.raises(ExportError, match="training needs at least 2"):
        find_videos(tmp_path)
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    with pytest.raises(ExportError, match="cannot prepare .*a.mp4"):
        prepare(find_videos(tmp_path), tmp_path / "cache", 128, say=lambda _: None)


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    """One data cache for the module: each video's landmarks are found once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory, clip_cache):
    """The two shortest shared clips, prepared for the small preset."""
    if not (SHARED_DATA / "driving").exists():
        pytest.skip("needs ../shared/data/driving beside the checkout")
    videos = tmp_path_factory.mktemp("clips")
    for name in ("d0.mp4", "d11.mp4"):
        (videos / name).symlink_to(SHARED_DATA / "driving" / name)
    dataset = prepare(find_videos(videos), clip_cache, SMALL.image_size, say=lambda _: None)
    return videos, clip_cache, dataset


@needs_clips
def test_prepared_clips_hold_back_their_ends(two_clips):
    _, _, dataset = two_clips
    for clip in dataset.clips:
        assert clip.frames[clip.train].max() < clip.split <= clip.frames[clip.held_back].min()
        assert clip.target_images.shape[1:] == (128, 128, 3)
        assert isinstance(clip.driver_images, Rows)  # left on disk, read per batch
        # Driver crops follow the head: their matrix changes only when the face drifts.
        assert len(np.unique(clip.driver_matrices.round(6), axis=0)) < len(clip.frames) / 4
    batch = make_batch(dataset, training_picks(dataset, np.random.default_rng(0), batch=3, k=2))
    assert batch.targets.shape == (3, 2, 3, 128, 128) and batch.mask.shape == (3, 1, 128, 128)
    assert 0.05 < batch.mask.mean() < 0.6
    picks = training_picks(dataset, np.random.default_rng(1), batch=50, k=2)
    for (c, driver), targets in picks:  # never a held-back frame, never the driver as a target
        clip = dataset.clips[c]
        assert {tc for tc, _ in targets} == {c}  # one clip per person: targets from the driver's clip
        frames = [driver, *(t for _, t in targets)]
        assert max(clip.frames[frames]) < clip.split and driver not in frames[1:]


def _train(videos, cache, out, *args):
    result = CliRunner().invoke(export_cli, [
        "train", "--videos", str(videos), "--data-cache", str(cache), "--out", str(out), "--batch", "2",
        "--targets", "1", "--disentangler-steps", "3", "--lr-generator", "2e-4", "--threads", "2",
        "--sample-every", "4", *args])
    assert result.exit_code == 0, result.output
    return result.output


@needs_clips
def test_a_few_training_steps_lower_the_loss(two_clips, tmp_path):
    videos, cache, _ = two_clips
    output = _train(videos, cache, tmp_path, "--steps", "12")
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    l1 = [r["l1"] for r in rows]
    assert np.mean(l1[-3:]) < 0.85 * np.mean(l1[:3]), l1
    assert "perceptual networks: face-weighted pixel L1 (no VGG19), dlib's face network x4" in output
    assert all(r["face"] > 0 and r["saturation"] >= 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step-000004.png", "step-000008.png", "step-000012.png"]
    from mnt.export.model.checkpoint import load_checkpoint

    trained = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert trained.config == SMALL
    np.testing.assert_allclose(trained.stats.mean, two_clips[2].stats.mean)


@needs_clips
def test_a_resumed_run_matches_an_uninterrupted_one(two_clips, tmp_path):
    videos, cache, _ = two_clips
    _train(videos, cache, tmp_path / "straight", "--steps", "4")
    _train(videos, cache, tmp_path / "resumed", "--steps", "2")
    with open(tmp_path / "resumed" / "losses.jsonl", "a") as log:  # as if killed after a step 3
        log.write(json.dumps({"step": 3, "l1": 9.0}) + "\n")
    assert "resuming" in _train(videos, cache, tmp_path / "resumed", "--steps", "4")
    straight, resumed = ((tmp_path / run / "losses.jsonl").read_text().splitlines()
                         for run in ("straight", "resumed"))
    assert [json.loads(r)["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed, strict=True):
        for key, value in json.loads(a).items():
            assert json.loads(b)[key] == pytest.approx(value, rel=1e-4), key
    result = CliRunner().invoke(export_cli, [
        "train", "--videos", str(videos), "--data-cache", str(cache), "--out", str(tmp_path / "resumed"),
        "--steps", "6", "--batch", "3"])
    assert result.exit_code != 0 and "other settings (batch" in result.output


@needs_clips
def test_interrupting_saves_the_state(two_clips, tmp_path, monkeypatch):
    from mnt.export.train.trainer import Settings, Trainer

    _, _, dataset = two_clips
    trainer = Trainer(dataset, tmp_path, Settings(steps=5, batch=1, targets=1, disentangler_steps=2),
                      say=lambda _: None)
    calls = []
    real_step = trainer.train_step

    def step_then_interrupt(batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(batch)

    monkeypatch.setattr(trainer, "train_step", step_then_interrupt)
    said: list[str] = []
    trainer.say = said.append
    with pytest.raises(KeyboardInterrupt):  # the CLI's exit 130 (143 for SIGTERM's Terminated)
        trainer.run()
    assert "interrupted at step 2; state saved" in said[-1]
    again = Trainer(dataset, tmp_path, Settings(steps=5, batch=1, targets=1, disentangler_steps=2),
                    say=lambda _: None)
    assert again.resume() and again.step == 2 and again.disentangler_done


@needs_clips
def test_ctrl_c_exits_130_in_both_phases_and_steps_0_trains_nothing(two_clips, tmp_path, monkeypatch):
    from mnt.export.train import trainer

    videos, cache, _ = two_clips
    base = ["train", "--videos", str(videos), "--data-cache", str(cache), "--batch", "1", "--targets", "1"]
    result = CliRunner().invoke(export_cli, [*base, "--out", str(tmp_path / "zero"), "--steps", "0"])
    assert result.exit_code == 0 and "trains nothing" in result.output
    assert not (tmp_path / "zero").exists()

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    said = {}
    for phase in ("fit_disentangler", "Trainer.train_step"):
        with monkeypatch.context() as patch:
            owner, _, name = phase.rpartition(".")
            patch.setattr(getattr(trainer, owner) if owner else trainer, name, interrupt)
            result = CliRunner().invoke(export_cli, [*base, "--out", str(tmp_path / name), "--steps", "2",
                                                     "--disentangler-steps", "2"])
        assert result.exit_code == 130, result.output
        said[name] = result.output
    assert "starts again on resume" in said["fit_disentangler"]
    assert "interrupted at step 0; state saved" in said["train_step"]
    assert (tmp_path / "train_step" / "train_state.safetensors").is_file()
    assert not (tmp_path / "fit_disentangler" / "train_state.safetensors").exists()


def test_the_cosine_schedule_falls_to_a_tenth():
    from mnt.export.train.trainer import Settings

    cosine = Settings(steps=100, schedule="cosine")
    rates = [cosine.rate(step) for step in range(0, 101, 10)]
    assert rates[0] == 1.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates, reverse=True)
    assert Settings(steps=100).rate(50) == 1.0


@needs_clips
def test_a_state_given_to_init_continues_every_network_and_optimiser(two_clips, tmp_path):
    from mnt.export.train.state import STATE_FILE
    from mnt.export.train.trainer import Settings, Trainer

    videos, cache, dataset = two_clips
    _train(videos, cache, tmp_path / "first", "--steps", "2")
    first = Trainer(dataset, tmp_path / "first", Settings(steps=2, batch=2, targets=1, disentangler_steps=3,
                                                          lr_generator=2e-4), say=lambda _: None)
    assert first.resume()
    later = Trainer(dataset, tmp_path / "later", Settings(lr_generator=1e-5), say=lambda _: None,
                    init=tmp_path / "first" / STATE_FILE)
    for name, module in first._modules().items():
        for (key, a), b in zip(module.state_dict().items(), later._modules()[name].state_dict().values(),
                               strict=True):
            assert torch.equal(a, b), (name, key)
    assert later.opt_d.state_dict()["state"] and later.disentangler_done  # Adam's moments came along
    assert later.opt_g.param_groups[0]["lr"] == 1e-5  # at the new run's rate
    output = _train(videos, cache, tmp_path / "cli", "--steps", "1", "--init",
                    str(tmp_path / "first" / STATE_FILE))
    assert "landmark disentangler" not in output  # trained already, not again


@needs_clips
def test_a_saturated_output_is_pulled_back_into_tanh_s_range(two_clips, tmp_path, monkeypatch):
    """The earlier demo model's red corner: pre-tanh values near 20, where tanh's slope
    (1e-17) leaves every image loss without a gradient; the saturation term moves them."""
    from mnt.export.train import trainer as module
    from mnt.export.train.trainer import Settings, Trainer

    _, _, dataset = two_clips
    moved = {}
    for name, limit in (("with", module.SATURATION), ("without", float("inf"))):
        monkeypatch.setattr(module, "SATURATION", limit)
        trainer = Trainer(dataset, tmp_path / name, Settings(batch=1, targets=1, lr_generator=1e-3,
                                                             lambda_face=0), say=lambda _: None)
        with torch.no_grad():
            trainer.generator.decoder.out.bias[0] = 20.0  # the whole red channel saturated
        values = trainer.train_step(trainer.batch())
        moved[name] = 20.0 - float(trainer.generator.decoder.out.bias[0])
        assert (values["saturation"] > 1) == (name == "with")
    assert moved["with"] > 0.5e-3 and abs(moved["without"]) < 1e-4, moved


@needs_clips
def test_a_mirrored_sample_is_the_sample_flipped(two_clips):
    from mnt.export.train.dataset import face_box

    _, _, dataset = two_clips
    picks = training_picks(dataset, np.random.default_rng(2), batch=2, k=2)
    plain, mirrored = make_batch(dataset, picks), make_batch(dataset, picks, np.array([True, False]))
    for name in ("driver", "targets"):
        np.testing.assert_array_equal(getattr(mirrored, name)[0], getattr(plain, name)[0][..., ::-1])
        np.testing.assert_array_equal(getattr(mirrored, name)[1], getattr(plain, name)[1])
    # Drawn anew from the mirrored points: the same up to a few edge pixels.
    assert np.mean(mirrored.mask[0] != plain.mask[0][..., ::-1]) < 0.002
    assert np.abs(mirrored.driver_landmarks[0] - plain.driver_landmarks[0][..., ::-1]).mean() < 0.01
    (c, d), _ = picks[0]
    box = face_box(dataset.clips[c].driver_landmarks[d])
    assert mirrored.face_box[0][0] == pytest.approx(127 - box[0], abs=1e-3)
    np.testing.assert_allclose(mirrored.face_box[0][1:], box[1:], atol=1e-3)


@needs_clips
def test_the_demo_model_beats_the_trivial_baselines(clip_cache):
    """The shipped checkpoint on held-back frames of the six driving clips (trained on): every
    metric beats the target returned unchanged; on the face, it also beats the target's
    frame seen through the driver's crop (which keeps the background for free)."""
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.runtime.defaults import default_checkpoint

    reference = load_checkpoint(default_checkpoint())
    dataset = prepare(find_videos(SHARED_DATA / "driving"), clip_cache, reference.config.image_size,
                      stats=reference.stats, say=lambda _: None)
    results = evaluate(reference, dataset, [1], frames=4)["results"][SELF]["1"]
    model, unchanged, same_view = (results[m] for m in METHODS[SELF])
    for metric in ("SSIM", "M-SSIM", "PSNR", "M-PSNR"):
        assert model[metric] > unchanged[metric], (metric, results)
    for metric in ("M-SSIM", "M-PSNR"):
        assert model[metric] > same_view[metric], (metric, results)


def test_the_demo_model_is_shipped_small_and_trained():
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.runtime.defaults import default_checkpoint

    path = default_checkpoint()
    assert path.stat().st_size <= 20e6
    assert load_checkpoint(path).config == SMALL
    with open(path, "rb") as handle:  # the note in the header says how it was made
        assert b"trained by mnt-export train" in handle.read(4096)
