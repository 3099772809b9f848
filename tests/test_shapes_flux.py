"""shapes-flux (issue #37): the FluxPipeline trained on the shapes world, by its micro recipe (seconds)."""

import json
import math
from pathlib import Path

import pytest
import torch

from helpers.device import cpu_model, isa_line
from helpers.shapes.world import SIZE, WORDS

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "helpers" / "shapes" / "weights"
SHIPPED = WEIGHTS / "shapes-flux"
MAX_BYTES = 15 * 1024 * 1024  # the budget for the whole folder's weights


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved pipeline but training.json (its times differ), by path inside the folder."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != "training.json"}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro recipe trained twice into two folders, the second run with a snapshot after every step: (first
    folder, second folder, first run's report)."""
    from helpers.shapes.flux import FluxConfig, train

    base = tmp_path_factory.mktemp("flux")
    report = train(FluxConfig.micro(), base / "one", progress=False)
    train(FluxConfig.micro(), base / "two", progress=False, snapshot_every=1)
    return base / "one", base / "two", report


def test_micro_training_is_byte_for_byte_reproducible_with_or_without_snapshots(micro):
    one, two, report = micro
    first = _files(one)
    second = {name: data for name, data in _files(two).items() if not name.startswith("snapshots/")}
    assert first == second
    # The snapshots: the EMA weights after steps 1 and 2 of 3 (not after the last), each a whole pipeline.
    snapshots = two / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-1", "step-2"]
    transformer_weights = "transformer/diffusion_pytorch_model.safetensors"
    assert _files(snapshots / "step-1").keys() == first.keys()
    assert _files(snapshots / "step-1")[transformer_weights] != first[transformer_weights]
    weights = [name for name in first if name.endswith(".safetensors")]
    assert len(weights) == 4  # transformer, both text encoders, the VAE
    assert not [name for name in first if name.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    saved = json.loads((one / "training.json").read_text())
    assert saved["config"]["steps"] == 3 and saved["loss"] == report["loss"] and math.isfinite(report["loss"])
    assert 0 < saved["pool_seconds"] < saved["seconds"]
    # The machine is named: a remake is byte for byte only on the same CPU kind.
    assert (saved["cpu"], saved["isa"]) == (cpu_model(), isa_line())


def test_a_snapshot_holds_the_ema_weights_and_training_goes_on_from_the_raw_ones():
    import random

    from torch.optim.optimizer import register_optimizer_step_post_hook

    from helpers.shapes.flux import FluxConfig, build_models, load_vae, train_transformer

    cfg = FluxConfig.micro()
    models = build_models(cfg, load_vae())
    transformer = models["transformer"]
    raw, ema = {}, {}

    def after_step(optimizer, args, kwargs):  # the raw weights, before the EMA's update of the same step
        raw[len(raw) + 1] = [p.detach().clone() for p in transformer.parameters()]

    def snapshot(step):
        ema[step] = [p.detach().clone() for p in transformer.parameters()]

    hook = register_optimizer_step_post_hook(after_step)
    try:
        train_transformer(cfg, models, random.Random(0), progress=False, snapshot=snapshot, snapshot_every=1)
    finally:
        hook.remove()
    assert sorted(ema) == [1, 2] and sorted(raw) == [1, 2, 3]
    # The EMA starts at the raw weights (its warm-up) and then lags them: at step 2 it differs from them.
    assert all(torch.equal(e, r) for e, r in zip(ema[1], raw[1], strict=True))
    assert not all(torch.equal(e, r) for e, r in zip(ema[2], raw[2], strict=True))
    with pytest.raises(ValueError, match="snapshot_every"):
        train_transformer(cfg, models, random.Random(0), progress=False, snapshot_every=-1)


def test_micro_model_loads_as_a_flux_pipeline_that_draws_64_px(micro):
    from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, FluxPipeline

    from helpers.shapes.flux import CALL_KWARGS

    pipeline = DiffusionPipeline.from_pretrained(micro[0], use_safetensors=True)
    assert type(pipeline) is FluxPipeline and isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    transformer = pipeline.transformer
    assert callable(transformer.enable_cache) and callable(transformer.compile_repeated_blocks)
    assert transformer._repeated_blocks and transformer.dtype == torch.float32  # stored in float16
    assert transformer.config.in_channels == 4 * pipeline.vae.config.latent_channels == 16
    assert pipeline.vae.config.shift_factor == 0.0 and pipeline.vae_scale_factor == 4
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                     **CALL_KWARGS).images[0]
    assert image.size == (SIZE, SIZE)


def test_load_defaults_to_64_px_and_the_cache_and_guidance_run(micro):
    from diffusers import FirstBlockCacheConfig

    from helpers.shapes.flux import CALL_KWARGS, load

    pipeline = load(micro[0])
    pipeline.set_progress_bar_config(disable=True)
    pipeline.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    images = pipeline(["a blue square", "a red circle on a gray background"], num_inference_steps=2,
                      max_sequence_length=CALL_KWARGS["max_sequence_length"], true_cfg_scale=4.0, negative_prompt="",
                      output_type="np").images
    assert images.shape == (2, SIZE, SIZE, 3)


def test_the_t5_tokenizer_keeps_the_worlds_words_whole_after_saving(tmp_path):
    from transformers import AutoTokenizer

    from helpers.tokenizer import build_t5_tokenizer

    tokenizer = build_t5_tokenizer(WORDS, model_max_length=16)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "a purple triangle on a black background"
    assert loaded.tokenize(text) == ["\u2581" + word for word in text.split()]
    ids = loaded(text, padding="max_length", max_length=16).input_ids
    assert ids == tokenizer(text, padding="max_length", max_length=16).input_ids
    assert ids[7:9] == [loaded.eos_token_id, loaded.pad_token_id] == [1, 0] and len(ids) == 16
    assert loaded.tokenize("portrait")  # any other word is spelled out, not lost


def test_the_full_recipes_pipeline_fits_the_weight_budget(tmp_path):
    """The full-size model, untrained, saved as training saves it: safetensors only, 15 MB at most."""
    from diffusers import FluxPipeline

    from helpers.shapes.flux import FluxConfig, build_models, load_vae

    models = build_models(FluxConfig(), load_vae())
    transformer = models["transformer"]
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 128
    assert sum(transformer.config.axes_dims_rope) == transformer.config.attention_head_dim
    FluxPipeline(**dict(models, transformer=transformer.half(), vae=models["vae"].half())).save_pretrained(tmp_path)
    weights = list(tmp_path.rglob("*.safetensors"))
    assert len(weights) == 4 and sum(f.stat().st_size for f in weights) <= MAX_BYTES


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shapes-flux is not shipped yet")
def test_shipped_flux_weights_are_small_and_safetensors_only():
    files = [f for f in SHIPPED.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".ckpt", ".pth")]
    assert sum(f.stat().st_size for f in files if f.suffix == ".safetensors") <= MAX_BYTES


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shapes-flux is not shipped yet")
def test_the_shipped_weights_were_trained_with_the_default_recipe():
    """`make shapes-flux` runs FluxConfig's defaults: the shipped run must have used exactly those."""
    import dataclasses

    from helpers.shapes.flux import FluxConfig

    recorded = json.loads((SHIPPED / "training.json").read_text())["config"]
    assert recorded == dataclasses.asdict(FluxConfig())


def test_train_flux_refuses_the_shipped_folder_without_ship(monkeypatch, capsys):
    from helpers.shapes import __main__ as command

    trained = []  # a broken guard must not cost the shipped weights: training is replaced by a recorder
    monkeypatch.setattr("helpers.shapes.flux.train", lambda *args, **kwargs: trained.append(args))
    for out in (SHIPPED, WEIGHTS):
        assert command.main(["train-flux", "--micro", "--out", str(out)]) == 2 and not trained
        err = capsys.readouterr().err
        assert err.strip().startswith("error:") and "--ship" in err
    assert command.main(["train-flux", "--micro", "--set", "text_width=30"]) == 2 and not trained
    assert "cannot be built" in capsys.readouterr().err


def test_train_flux_refuses_snapshots_it_cannot_take_in_one_line(monkeypatch, capsys, tmp_path):
    from helpers.shapes import __main__ as command

    trained = []
    monkeypatch.setattr("helpers.shapes.flux.train", lambda *args, **kwargs: trained.append(args))
    (tmp_path / "old" / "snapshots").mkdir(parents=True)
    for extra, says in ((["--snapshot-every", "-1"], "0 for no snapshots"), (["--ship", "--snapshot-every", "5"],
                        "shipped weights"), (["--out", str(tmp_path / "old"), "--snapshot-every", "1"], "delete it")):
        assert command.main(["train-flux", "--micro", *extra]) == 2 and not trained
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and says in err and len(err.splitlines()) == 1


def test_eval_judges_a_flux_folder_with_the_flux_evaluation(micro, monkeypatch):
    from helpers.shapes import __main__ as command

    seen = []
    monkeypatch.setattr("helpers.shapes.flux.evaluate", lambda model, **kwargs: seen.append((model, kwargs)))
    assert command.main(["eval", "--model", str(micro[0]), "--seeds", "1"]) == 0
    assert command.main(["eval", "--model", str(micro[0]), "--true-cfg", "2.5"]) == 0
    assert seen == [(str(micro[0]), {"seeds": 1, "device": None, "cfg_scale": 4.0}),
                    (str(micro[0]), {"seeds": 8, "device": None, "cfg_scale": 2.5})]
    assert command.main(["eval", "--true-cfg", "2.5"]) == 2 and len(seen) == 2  # the shipped shapes: no true CFG
    assert command.main(["eval", "--model", "shapes-flux", "--seeds", "1"]) == 0  # a shipped model by name
    assert seen[-1] == (str(SHIPPED), {"seeds": 1, "device": None, "cfg_scale": 4.0})
    monkeypatch.setattr(command, "_grid", lambda args: seen.append(args.model))  # grid takes the names too
    assert command.main(["grid", "--model", "shapes", "--out", "unused.png"]) == 0
    assert seen[-1] == str(WEIGHTS / "shapes")


@pytest.mark.parametrize(("extra", "says"), [(["--seeds", "0"], "--seeds 0"),
                                            (["--device", "cuda"], "--device cuda"),
                                            (["--device", "tpu"], "--device tpu")])
def test_eval_refuses_seeds_and_devices_it_cannot_use_in_one_line(extra, says, monkeypatch, capsys):
    from helpers.shapes import __main__ as command

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    loaded = []
    monkeypatch.setattr("helpers.shapes.flux.evaluate", lambda *a, **k: loaded.append(a))
    monkeypatch.setattr("helpers.shapes.evaluate.evaluate", lambda *a, **k: loaded.append(a))
    assert command.main(["eval", "--model", str(SHIPPED), *extra]) == 2 and not loaded
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and says in err and len(err.splitlines()) == 1


def test_each_cache_check_of_05_fails_when_the_cache_is_a_no_op(micro, monkeypatch):
    """05's own cache configs, run on the micro model with true guidance as 05 runs them: each computes the watched
    attention less often than every call (05's first check), and two of them compute the negative prompt's far less
    often than the prompt's (its hand-over check); with enable_cache made a no-op, every count says otherwise."""
    import nbformat
    from diffusers import DiffusionPipeline

    from helpers.effects import count_runs
    from helpers.shapes.flux import CALL_KWARGS

    cells = nbformat.read(ROOT / "notebooks" / "05_transformers.ipynb", as_version=4).cells
    source = next(c.source for c in cells if "CACHES = {" in c.source)
    pipeline = DiffusionPipeline.from_pretrained(micro[0], use_safetensors=True)
    pipeline.set_progress_bar_config(disable=True)
    scope = {"pipeline": pipeline, "dtype": torch.float32}
    exec(source, scope)  # the notebook's cell as it is: its configs, thresholds and timestep callback
    transformer = pipeline.transformer

    def computed(config) -> tuple[float, float]:
        transformer.enable_cache(config)
        with count_runs(transformer, transformer.single_transformer_blocks[-1].attn) as runs:
            pipeline(["a red circle", "a blue square"], num_inference_steps=20, output_type="np",
                     generator=[torch.Generator().manual_seed(i) for i in range(2)],
                     **CALL_KWARGS, true_cfg_scale=4.0, negative_prompt="")
        transformer.disable_cache()
        assert "cache_context" not in vars(transformer)  # count_runs put the pipeline's own method back
        return runs.share_in("cond"), runs.share_in("uncond")

    configs = scope["CACHES"]
    assert len(configs) >= 4
    shares = {name: computed(config) for name, config in configs.items()}
    assert all(min(pair) < 1 for pair in shares.values()), shares  # 05's check passes: each cache skipped work
    handed_over = {name: uncond < cond / 2 for name, (cond, uncond) in shares.items()}
    # what 05's hand-over check prints: the two caches that ignore the cache context hand the prompt's attention over
    assert handed_over["pyramid attention broadcast"] and handed_over["FasterCache"], shares
    assert not handed_over["TaylorSeer"], shares  # its state is kept per context: both follow one schedule
    monkeypatch.setattr(type(transformer), "enable_cache", lambda self, config: None)
    monkeypatch.setattr(type(transformer), "disable_cache", lambda self: None)
    for config in configs.values():
        cond, uncond = computed(config)
        assert cond == uncond == 1  # a no-op: both of 05's checks fail for every cache


NOISE_LEVELS = ROOT / "scripts" / "flux_noise_levels.py"


def test_noise_levels_draws_each_scene_back_from_its_noisy_picture():
    """From t = 0.2 the noisy picture holds the layout: each shape comes back where its scene put it (from pure noise
    it would land anywhere: 6-23 px away for these scenes), and the table counts what the judge reads."""
    import random
    import runpy

    from helpers.shapes.flux import load
    from helpers.shapes.judge import analyse
    from helpers.shapes.world import render, sample_scene

    script = runpy.run_path(str(NOISE_LEVELS))
    shapes = ["circle", "square", "triangle"] * 2
    scenes = [sample_scene(random.Random(k), shape=shape) for k, shape in enumerate(shapes)]
    pipeline = load(SHIPPED)
    pipeline.set_progress_bar_config(disable=True)
    drawn = [analyse(image) for image in script["redraw"](pipeline, scenes, 0.2)]
    rendered = [analyse(render(scene)) for scene in scenes]  # the judge's centroid of each scene's own picture
    moved = [math.hypot(d.cx - r.cx, d.cy - r.cy) for d, r in zip(drawn, rendered, strict=True)]
    assert max(moved) < 3, moved
    table = script["shape_table"](pipeline, scenes, [0.2, 0.1])
    assert list(table.index) == [0.2, 0.1] and list(table.columns) == ["circle", "square", "triangle", "all"]
    right = [d.shape == s.shape for d, s in zip(drawn, scenes, strict=True)]
    assert table.loc[0.2, "all"] == round(100 * sum(right) / len(right), 1)
    assert table.loc[0.2, "all"] == pytest.approx(table.loc[0.2, ["circle", "square", "triangle"]].mean(), abs=0.1)


@pytest.mark.parametrize("levels", ["0", "1.5", "high"])
def test_noise_levels_refuses_levels_outside_0_to_1_in_one_line(levels, capsys):
    import runpy

    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(NOISE_LEVELS))["main"](["--levels", levels])
    assert exit_.value.code == 2 and "--levels" in capsys.readouterr().err.strip().splitlines()[-1]
