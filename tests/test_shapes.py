import contextlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.shapes import BACKGROUNDS, COLOURS, SHAPES, analyse, caption, judge, render, sample_scene
from helpers.shapes.world import MAX_BOX, MIN_BOX, SIZE

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "helpers" / "shapes" / "weights"  # what the package ships
SHIPPED = WEIGHTS / "shapes"


def test_judge_reads_rendered_pictures_from_every_pixel_off_the_background():
    """Every pixel off the background is the shape in a render: the (strict) judge reads all 600 right."""
    rng = random.Random(123)
    for scene in [sample_scene(rng) for _ in range(600)]:
        verdict = analyse(render(scene))
        assert (verdict.colour, verdict.shape, verdict.background) == (scene.colour, scene.shape, scene.background)


def test_judge_counts_every_pixel_off_the_background():
    """A speck of stray colour beside a circle: the judge takes it into the outline, so the circle is no circle."""
    from helpers.shapes.judge import off_background
    from helpers.shapes.world import shape_mask

    scene = sample_scene(random.Random(0), "red", "circle", "gray")
    picture = np.asarray(render(scene)).copy()
    ys, xs = np.nonzero(shape_mask(scene))
    speck = (ys.min() - 6, xs.min()) if ys.min() >= 9 else (ys.max() + 4, xs.max())
    picture[speck[0] : speck[0] + 3, speck[1] : speck[1] + 3] = (0, 255, 255)  # 3x3 cyan, 4 px off the outline
    assert analyse(render(scene)).shape == "circle"
    strict = analyse(picture)
    assert strict.area == off_background(render(scene), "gray").sum() + 9
    assert strict.shape != "circle" and strict.colour == "red"
    assert analyse(np.full((SIZE, SIZE, 3), 128, np.uint8)).shape is None


def test_every_combination_renders_inside_the_picture():
    rng = random.Random(5)
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                scene = sample_scene(rng, colour, shape, background)
                picture = np.asarray(render(scene))
                assert picture.shape == (SIZE, SIZE, 3)
                verdict = analyse(picture)
                assert MIN_BOX**2 * 0.3 < verdict.area < MAX_BOX**2  # the shape is there, not the whole picture
                edge = np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]])
                assert (edge == BACKGROUNDS[background]).all(), "the shape touches the border"


def test_judge_sees_nothing_in_a_blank_picture():
    assert judge(np.full((SIZE, SIZE, 3), 128, np.uint8)) == (None, None, "gray")


def test_judge_accepts_pipeline_float_output():
    scene = sample_scene(random.Random(0), "blue", "triangle", "white")
    as_floats = np.asarray(render(scene)).astype(np.float32) / 255
    assert judge(as_floats) == ("blue", "triangle", "white")


def test_captions():
    scene = sample_scene(random.Random(0), "red", "circle", "black")
    assert caption(scene) == "a red circle on a black background"
    assert caption(scene, name_background=False) == "a red circle"


def test_micro_training_round_trips_through_save_pretrained(tmp_path):
    from diffusers import AutoencoderKL, DiffusionPipeline

    from helpers.shapes.train import Config, train

    report = train(Config.micro(), tmp_path)
    assert np.isfinite(report["unet_loss"]) and np.isfinite(report["vae_loss"])
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "shapes", use_safetensors=True)
    assert pipeline.unet.dtype == torch.float32  # stored in float16, loaded as float32 like the real model
    image = pipeline("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (SIZE, SIZE)
    vae = AutoencoderKL.from_pretrained(tmp_path / "shapes-vae-ft", use_safetensors=True)
    encoder = {k: v for k, v in vae.state_dict().items() if k.startswith("encoder.")}
    for name, weight in encoder.items():  # the same latent space: only the decoder was trained further
        assert torch.equal(weight, pipeline.vae.state_dict()[name])
    assert vae.config.scaling_factor == pipeline.vae.config.scaling_factor != 0.18215  # SD's default: not ours
    assert json.loads((tmp_path / "training.json").read_text())["config"]["unet_steps"] == 3


def test_saved_vae_phases_give_the_files_of_a_whole_run(tmp_path):
    """A run from saved phases 1-2 goes on with the same weights and random states: every file as from scratch."""
    import dataclasses

    from helpers.shapes.train import Config, train

    cfg = dataclasses.replace(Config.micro(), decode_mean=False)  # posterior samples: the torch RNG matters too
    phases = tmp_path / "phases.safetensors"
    train(cfg, tmp_path / "whole")
    train(cfg, tmp_path / "saving", vae_phases=phases)  # no file yet: trains phases 1-2 and saves them
    report = train(cfg, tmp_path / "loading", vae_phases=phases)
    assert report["vae_phases_from"] == str(phases) and report["seconds"]["vae"] > 0
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.safetensors"))
    assert len(files) == 4  # the pipeline's VAE, UNet and text encoder, and shapes-vae-ft
    for name in files:
        whole = (tmp_path / "whole" / name).read_bytes()
        assert whole == (tmp_path / "saving" / name).read_bytes() == (tmp_path / "loading" / name).read_bytes()


def test_saved_vae_phases_serve_only_the_same_vae_settings(tmp_path, capsys):
    import dataclasses

    from helpers.errors import TutorialError
    from helpers.shapes.__main__ import main
    from helpers.shapes.train import Config, train

    phases = tmp_path / "phases.safetensors"
    train(Config.micro(), tmp_path / "first", vae_phases=phases)
    with pytest.raises(TutorialError, match="other settings for phases 1-2 \\(vae_lr\\)"):
        train(dataclasses.replace(Config.micro(), vae_lr=1e-4), tmp_path / "second", vae_phases=phases)
    # A UNet setting may differ, and --set says so in training.json.
    assert main(["train", "--micro", "--out", str(tmp_path / "third"), "--vae-phases", str(phases),
                 "--set", "snr_gamma=10", "--set", "unet_lr=0.002"]) == 0
    config = json.loads((tmp_path / "third" / "training.json").read_text())["config"]
    assert config["snr_gamma"] == 10.0 and config["unet_lr"] == 0.002
    capsys.readouterr()
    for bad, says in (("snr=10", "NAME=VALUE with NAME one of"), ("snr_gamma=ten", "not a Python literal"),
                      ("unet_steps=1.5", "takes a value of type int"), ("unet_steps=0", "must be 1 or more"),
                      ("unet_channels=(48,48)", "cannot be built"), ("vae_channels=(32,'a')", "positive whole")):
        assert main(["train", "--micro", "--out", str(tmp_path / "bad"), "--set", bad]) == 2
        assert says in capsys.readouterr().err
    assert main(["train", "--micro", "--out", str(tmp_path / "bad"), "--vae-phases", str(tmp_path)]) == 2
    assert "takes a file" in capsys.readouterr().err
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(phases.read_bytes()[:1000])  # as an interrupted copy would leave it
    assert main(["train", "--micro", "--out", str(tmp_path / "bad"), "--vae-phases", str(damaged)]) == 2
    assert "not a file of saved VAE phases (or a damaged one)" in capsys.readouterr().err
    assert main(["train", "--micro", "--out", str(tmp_path / "bad"), "--resume", str(tmp_path / "first"),
                 "--set", "unet_steps=5"]) == 2
    assert "--set unet_steps would not reach the model" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_every_setting_is_sorted_into_the_vae_phases_or_not():
    """A new Config setting must be placed: one that phases 1-2 use belongs in VAE_PHASE_SETTINGS, or a saved file
    of those phases would serve runs it does not fit."""
    import dataclasses

    from helpers.shapes.train import PHASE_4_SETTINGS, VAE_PHASE_SETTINGS, Config

    later = {"latent_noise", "unet_channels", "text_width", "text_layers", "unet_steps", "unet_batch", "unet_lr",
             "ema_decay", "snr_gamma", "noise_offset", "empty_caption", "name_background", *PHASE_4_SETTINGS}
    fields = [field.name for field in dataclasses.fields(Config)]
    assert sorted(fields) == sorted([*VAE_PHASE_SETTINGS, *later]), "place the new setting in one of the two"


def test_the_vae_options_of_issue_25_reach_the_saved_model(tmp_path, monkeypatch):
    """8 GroupNorm groups are saved in the VAE's config; with decode_mean no phase draws from the posterior."""
    import dataclasses

    from diffusers import AutoencoderKL
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from helpers.shapes.train import Config, train

    def no_sampling(self, generator=None):
        raise AssertionError("decode_mean: the posterior's mean only")

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", no_sampling)
    train(dataclasses.replace(Config.micro(), vae_norm_groups=8, decode_mean=True), tmp_path)
    for folder in (tmp_path / "shapes" / "vae", tmp_path / "shapes-vae-ft"):
        assert AutoencoderKL.from_pretrained(folder, use_safetensors=True).config.norm_num_groups == 8


class _FirstBatch(Exception):
    """Raised by a recording hook once it holds the first batch: the rest of the micro run is not needed."""


def test_latent_noise_reaches_the_unets_training_latents(tmp_path, monkeypatch):
    """The UNet's first training batch: the same latents in both runs, plus noise of std latent_noise in one."""
    import dataclasses

    from diffusers import DDPMScheduler

    from helpers.shapes.train import Config, train

    first = []

    def recording(self, original_samples, noise, timesteps):
        first.append(original_samples.clone())
        raise _FirstBatch

    monkeypatch.setattr(DDPMScheduler, "add_noise", recording)
    batches = []
    for noise in (0.0, 0.5):
        first.clear()
        with pytest.raises(_FirstBatch):
            train(dataclasses.replace(Config.micro(), latent_noise=noise), tmp_path / str(noise))
        batches.append(first[0])
    added = batches[1] - batches[0]
    assert 0.4 < added.std().item() < 0.6 and abs(added.mean().item()) < 0.1


def test_vae_latent_noise_reaches_the_decoders_first_training_batch(tmp_path, monkeypatch):
    """The decoder's first batch: the same latents in both runs, plus noise of 0.5 times their spread in one."""
    import dataclasses

    from diffusers import AutoencoderKL

    from helpers.shapes.train import Config, train

    first, decode = [], AutoencoderKL.decode

    def recording(self, z, *args, **kwargs):
        if self.training:
            first.append(z.detach().float().clone())
            raise _FirstBatch
        return decode(self, z, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", recording)
    batches = []
    for noise in (0.0, 0.5):
        first.clear()
        with pytest.raises(_FirstBatch):
            train(dataclasses.replace(Config.micro(), decode_mean=True, vae_latent_noise=noise),
                  tmp_path / str(noise))
        batches.append(first[0])
    added = (batches[1] - batches[0]) / batches[0].std()
    assert 0.4 < added.std().item() < 0.6 and abs(added.mean().item()) < 0.1


def test_shipped_weights_come_from_the_recipe_in_the_code():
    """``make shapes`` trains with ``Config()``: its settings must be the shipped run's, or it cannot remake them."""
    import dataclasses

    from helpers.shapes.train import Config

    shipped = json.loads((WEIGHTS / "training.json").read_text())["config"]
    recipe = json.loads(json.dumps(dataclasses.asdict(Config())))  # tuples become lists, as in the file
    added_since = {}  # settings added to Config since the shipped run, with the values that run used
    assert {k: v for k, v in recipe.items() if k in shipped} == shipped, "Config() is not the shipped run's recipe"
    assert {k: v for k, v in recipe.items() if k not in shipped} == added_since, (
        "a setting added to Config since the shipped run: give it the value that run used, and add it here")
    vae = json.loads((SHIPPED / "vae" / "config.json").read_text())
    assert vae["norm_num_groups"] == recipe["vae_norm_groups"]


def test_contiguous_group_norms_give_the_same_result_and_restore_the_model():
    from helpers.shapes.train import Config, contiguous_group_norms, make_vae

    torch.manual_seed(0)
    vae = make_vae(Config.micro())
    x = torch.randn(2, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = vae.encode(x).latent_dist.mean
        with contiguous_group_norms(vae):
            norms = [m for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)]
            assert norms and all(m._forward_pre_hooks for m in norms)
            nchw = vae.encode(x).latent_dist.mean
    assert torch.allclose(plain.float(), nchw.float(), atol=2e-2)
    assert not any(m._forward_pre_hooks for m in norms)  # plain GroupNorms again


def test_training_refuses_to_overwrite_the_shipped_model(monkeypatch, capsys):
    from helpers.shapes import __main__ as command

    trained = []  # a broken guard must not cost the shipped weights: training is replaced by a recorder
    monkeypatch.setattr("helpers.shapes.train.train", lambda *args, **kwargs: trained.append(args))
    assert command.main(["train", "--micro", "--out", str(WEIGHTS)]) == 2 and not trained
    err = capsys.readouterr().err
    assert err.strip().startswith("error:") and "--ship" in err


def test_shipped_weights_are_small_and_safetensors_only():
    # shapes' own folders: shapes-flux (issue #37) has its own budget, in tests/test_shapes_flux.py
    files = [f for f in WEIGHTS.rglob("*") if f.is_file() and "shapes-flux" not in f.relative_to(WEIGHTS).parts]
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert weights and not [f for f in files if f.suffix in (".bin", ".pt", ".ckpt", ".pth")]
    assert sum(f.stat().st_size for f in weights) <= 20 * 1024 * 1024


def test_shipped_fine_tuned_vae_shares_the_pipeline_vae_latent_space():
    from diffusers import AutoencoderKL

    base = AutoencoderKL.from_pretrained(SHIPPED / "vae", use_safetensors=True)
    tuned = AutoencoderKL.from_pretrained(SHIPPED.parent / "shapes-vae-ft", use_safetensors=True)
    assert tuned.config.scaling_factor == base.config.scaling_factor  # latents are scaled alike for the UNet
    assert torch.equal(tuned.encoder.conv_in.weight, base.encoder.conv_in.weight)


@pytest.mark.parametrize(("prompt", "seed"), [
    ("a red circle", 0), ("a blue square", 4), ("a yellow triangle", 1), ("a green circle on a gray background", 3),
    ("a purple square on a black background", 1), ("a orange triangle on a white background", 5)])
def test_shipped_model_draws_what_it_is_asked(shapes_pipe, prompt, seed):
    image = shapes_pipe(prompt, num_inference_steps=20, generator=torch.Generator().manual_seed(seed)).images[0]
    words = prompt.split()
    colour, shape, background = judge(image)
    assert (colour, shape) == (words[1], words[2]), f"{prompt!r} was drawn as a {colour} {shape}"
    if "background" in words:
        assert background == words[-2]


# The shipped model's pinned picture: 'a red circle', seed 0, DPM-Solver++ 20 steps, float32; the mean over colours
# of every 16th pixel (the same to 4 decimals on an AMX CPU and with the ISA capped at AVX2). Retraining moves it:
# pin the new one then.
SHAPES_PIXELS = [[0.5136, 0.5143, 0.5149, 0.5172], [0.5141, 0.5031, 0.5095, 0.3716],
                 [0.5139, 0.5041, 0.5201, 0.3779], [0.5139, 0.503, 0.5052, 0.5006]]


def test_shipped_model_draws_its_pinned_pixels(shapes_pipe):
    image = shapes_pipe("a red circle", num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                        output_type="np").images[0]
    assert np.abs(image[::16, ::16].mean(-1) - np.array(SHAPES_PIXELS)).max() < 1e-2


@pytest.fixture(scope="module")
def shapes_pipe():
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

    pipeline = DiffusionPipeline.from_pretrained(SHIPPED, use_safetensors=True)
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


_DRAW = """
import hashlib, sys, torch
from helpers.models import load_pipeline
for model in sys.argv[1:]:
    pipe = load_pipeline(model, device="cpu", quiet=True)
    ids = pipe.tokenizer("portrait photo of a red circle").input_ids
    images = pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    print(model, ids, hashlib.sha256(images.tobytes()).hexdigest())
"""


def test_same_seed_in_two_processes_gives_the_same_image(monkeypatch):
    """The same drawing in a new process and in this one (each with its own hash seed): the same ids and pixels."""
    child = subprocess.run([sys.executable, "-c", _DRAW, "shapes", "tiny"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, check=True).stdout
    here = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["-c", "shapes", "tiny"])
    with contextlib.redirect_stdout(here):
        exec(_DRAW, {"__name__": "__main__"})
    assert here.getvalue() == child and len(child.strip().splitlines()) == 2


def test_stray_colour_is_none_in_renders_and_found_where_planted():
    from helpers.shapes.evaluate import has_stray_colour, stray_pixels, stray_pixels_generated
    from helpers.shapes.world import shape_mask

    rng = random.Random(7)
    for scene in [sample_scene(rng) for _ in range(100)]:
        picture = np.asarray(render(scene))
        assert stray_pixels(picture, scene) == stray_pixels_generated(picture) == 0
        assert not has_stray_colour(picture, scene) and not has_stray_colour(picture)
    scene = sample_scene(random.Random(0), "red", "circle", "gray")
    mask = shape_mask(scene)
    ys, xs = np.nonzero(mask)
    picture = np.asarray(render(scene)).copy()
    picture[ys.min() - 2, xs[ys == ys.min()][0]] = (0, 255, 255)  # 2 px above the outline: the margin allows it
    assert stray_pixels(picture, scene) == 0
    far = (ys.max() + 5, xs.max() + 5) if ys.max() + 5 < SIZE else (ys.min() - 6, xs.min() - 6)
    picture[far] = (128 + 41, 128, 128)  # 41 levels off the gray background in one channel
    assert stray_pixels(picture, scene) == stray_pixels_generated(picture) == 1
    assert has_stray_colour(picture, scene) and not has_stray_colour(picture)  # one pixel: a generated picture may
    picture[far[0] : far[0] + 2, far[1] : far[1] + 2] = (128, 128, 128 - 60)  # a 2x2 speck
    assert stray_pixels_generated(picture) == 4 and has_stray_colour(picture)
    shifted = np.clip(np.asarray(render(scene)).astype(int) + 40, 0, 255).astype(np.uint8)
    assert stray_pixels(shifted, scene) == 0  # a background 40 levels off still counts as the background


def test_grid_shows_renders_above_both_vaes_reconstructions(tmp_path, capsys):
    from PIL import Image

    from helpers.images import GUTTER
    from helpers.shapes.__main__ import main

    assert main(["grid", "--out", str(tmp_path / "grid.jpg")]) == 2
    assert "ending in .png" in capsys.readouterr().err
    assert main(["grid", "--out", str(tmp_path / "grid.png")]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    row = grid.shape[0] // 3  # 3 captioned rows of 9 scenes at 2x
    assert grid.shape[1] == 9 * (2 * SIZE + GUTTER) and row > 2 * SIZE

    def cell(r: int) -> np.ndarray:
        return grid[r * row : r * row + 2 * SIZE : 2, : 2 * SIZE : 2]  # the first scene of row r, back at 1x

    from diffusers import AutoencoderKL

    from helpers.shapes.evaluate import reconstruct

    scene = sample_scene(random.Random(20_000), "red", "circle", "white")
    picture = np.asarray(render(scene))
    assert (cell(0) == picture).all()
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 127.5 - 1
    for r, folder in ((1, SHIPPED / "vae"), (2, WEIGHTS / "shapes-vae-ft")):
        alone = reconstruct(AutoencoderKL.from_pretrained(folder, use_safetensors=True), x)[0]
        assert np.abs(cell(r).astype(int) - alone).max() <= 2  # a batch of 1 rounds a level or two differently
    assert np.abs(cell(1).astype(int) - cell(2)).max() > 10  # two VAEs, not one twice


def test_grid_and_eval_refuse_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    from helpers.shapes.__main__ import main

    for command in ("grid", "eval"):
        assert main([command, "--model", str(tmp_path)]) == 2
        assert "not a shapes pipeline folder" in capsys.readouterr().err
