"""helpers.models: choosing a model for the device, where each lives, the one hub error, loading."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import presets
from helpers.errors import TutorialError
from helpers.models import (
    REAL_MODEL,
    WEIGHTS,
    cache_dir,
    choose_model,
    choose_vae,
    folder_size,
    load_pipeline,
    materialise,
    model_kind,
    resolve_model,
)

ROOT = Path(__file__).resolve().parents[1]


def test_presets_become_folders_that_from_pretrained_loads():
    from diffusers import AutoencoderKL, DiffusionPipeline

    model_id = choose_model("cpu", "tiny", quiet=True)
    assert Path(model_id).resolve() == (cache_dir() / "tiny").resolve()
    pipeline = DiffusionPipeline.from_pretrained(model_id, use_safetensors=True)
    assert pipeline.unet.dtype == torch.float32 and pipeline.text_encoder.dtype == torch.float32
    vae = AutoencoderKL.from_pretrained(choose_vae(model_id), use_safetensors=True)
    assert not torch.equal(vae.decoder.conv_out.weight, pipeline.vae.decoder.conv_out.weight)
    assert model_kind(model_id) == "tiny" and folder_size(model_id) > 0


def test_materialise_reuses_the_folder():
    first = materialise("tiny")
    stamp = (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert materialise("tiny") == first
    assert (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_cpu_default_is_the_shipped_shapes_model(monkeypatch):
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    model_id = choose_model("cpu", quiet=True)
    assert Path(model_id).resolve() == (WEIGHTS / "shapes").resolve() and model_kind(model_id) == "shapes"
    assert Path(choose_vae(model_id)).resolve() == (WEIGHTS / "shapes-vae-ft").resolve()
    assert model_kind(REAL_MODEL) == model_kind(str(ROOT)) == "other"  # any hub id or other folder


def test_gpu_default_is_the_real_model_checked_before_loading(monkeypatch, tmp_path):
    # Offline, with an empty cache: the check itself must give the one-line error, before any download starts.
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(TutorialError, match="stable-diffusion-v1-5/stable-diffusion-v1-5.*TUTORIAL_MODEL=shapes"):
        choose_model("cuda")


def test_unreachable_hub_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("helpers.models.hub_reachable", lambda timeout=3.0: "no (test)")
    fix = "Hub does not answer: test.*TUTORIAL_MODEL=shapes.*--model shapes.*HF_HUB_OFFLINE=1"
    with pytest.raises(TutorialError, match=fix):
        choose_model("cpu", "someone/some-model", quiet=True)


def test_missing_shapes_folder_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr("helpers.models.WEIGHTS", tmp_path)
    with pytest.raises(TutorialError, match="make shapes"):
        choose_model("cpu", "shapes", quiet=True)


def test_explicit_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("TUTORIAL_MODEL", "sd15-random")
    assert resolve_model("tiny", "cpu") == ("tiny", "chosen explicitly")


def test_env_var_wins_over_default(monkeypatch):
    monkeypatch.setenv("TUTORIAL_MODEL", "sd15-random")
    spec, reason = resolve_model(None, "cpu")
    assert spec == "sd15-random" and "TUTORIAL_MODEL" in reason


def test_default_depends_on_device(monkeypatch):
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    assert resolve_model(None, "cpu")[0] == "shapes"
    assert resolve_model(None, "cuda")[0] == REAL_MODEL
    assert resolve_model(None, "mps")[0] == REAL_MODEL


def test_removed_hub_id_is_mapped_with_a_notice(capsys):
    assert resolve_model("runwayml/stable-diffusion-v1-5")[0] == REAL_MODEL
    assert "removed" in capsys.readouterr().out


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(TutorialError, match="shapes, tiny, sd15-random"):
        resolve_model("nonsense")


@pytest.mark.parametrize("spec", ["./nonexistent_dir", "/no/such", "a/..", "~/nope"])
def test_a_missing_folder_is_named_in_one_line_not_taken_for_a_hub_id(spec):
    with pytest.raises(TutorialError, match="Unknown model") as err:
        resolve_model(spec)
    assert "\n" not in str(err.value) and "no such folder" in str(err.value)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(TutorialError, match="no .safetensors weights"):
        resolve_model(str(tmp_path))


def test_a_file_is_not_a_model(tmp_path):
    f = tmp_path / "model.ckpt"
    f.write_bytes(b"\0")
    with pytest.raises(TutorialError, match="is a file"):
        resolve_model(str(f))


def test_error_renders_as_one_line_in_ipython():
    err = TutorialError("set TUTORIAL_MODEL=tiny")
    assert err._render_traceback_() == ["TutorialError: set TUTORIAL_MODEL=tiny"]


def _load_in_subprocess(spec: str, **env) -> subprocess.CompletedProcess:
    code = ("from helpers.models import load_pipeline, TutorialError\n"
            f"try:\n    load_pipeline({spec!r}, device='cpu')\n"
            "except TutorialError as e:\n    print('ERROR:', e)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_hub_unreachable_gives_one_clear_line(tmp_path, env):
    # The real loading code runs up to the network: an empty cache, and no Hub to reach.
    proc = _load_in_subprocess(REAL_MODEL, HF_HOME=str(tmp_path), **env)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, proc.stdout + proc.stderr
    assert "TUTORIAL_MODEL=shapes" in errors[0] and "--model shapes" in errors[0] and "HF_HUB_OFFLINE" in errors[0]
    assert "Traceback" not in proc.stderr


def test_tiny_has_the_real_classes():
    pipe = presets.tiny()
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert [type(pipe.unet).__name__, type(pipe.vae).__name__, type(pipe.text_encoder).__name__,
            type(pipe.tokenizer).__name__, type(pipe.scheduler).__name__] == [
        "UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel", "CLIPTokenizer", "PNDMScheduler"]
    assert pipe.safety_checker is None


def test_tokenizer_knows_the_guide_prompt_words():
    tok = presets.preset_tokenizer()
    ids = tok("portrait photo of a old warrior chief").input_ids
    assert len(ids) == 9  # start + 7 words + end, as with CLIP's real vocabulary
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.model_max_length == 77


def test_load_pipeline_sets_dtype_and_device(tiny_pipe):
    assert tiny_pipe.unet.dtype == torch.float32 and tiny_pipe.device.type == "cpu"
    half = load_pipeline("tiny", dtype="half", device="cpu", quiet=True)
    assert {half.unet.dtype, half.vae.dtype, half.text_encoder.dtype} == {torch.bfloat16}


def test_load_pipeline_announces_the_choice(capsys, monkeypatch):
    monkeypatch.setenv("TUTORIAL_MODEL", "tiny")
    load_pipeline(device="cpu")
    out = capsys.readouterr().out
    assert out.startswith("Model: tiny") and "TUTORIAL_MODEL" in out


def test_same_seed_gives_bit_identical_images(tiny_pipe):
    def run(seed):
        return tiny_pipe("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(seed),
                         output_type="np").images

    first, again, other = run(0), run(0), run(1)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_tiny_makes_64_pixel_images(tiny_pipe):
    image = tiny_pipe("portrait photo of a old warrior chief", num_inference_steps=2).images[0]
    assert image.size == (64, 64)


def test_sd15_random_has_the_real_parameter_counts():
    with torch.device("meta"):  # the architecture without its 4.3 GB of float32 weights
        pipe = presets.sd15_random()

    def millions(module):
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)

    assert (millions(pipe.unet), millions(pipe.vae), millions(pipe.text_encoder)) == (859.52, 83.65, 123.06)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 512
    assert pipe.scheduler.config.skip_prk_steps and pipe.scheduler.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_every_load_on_a_gpu_machine_gets_the_real_model(kind, simulate_device, monkeypatch, capsys):
    """A notebook that loads on the CPU first (float32, offload) must still get the GPU's model, not shapes."""
    from helpers import models

    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    simulate_device(kind)
    monkeypatch.setattr(models, "check_hub", lambda *args, **kwargs: None)  # no Hub here: pretend it answers
    loaded = []

    def fake_from_pretrained(cls, spec, **kwargs):  # stands in for the download; records what was asked for
        loaded.append(spec)
        return presets.tiny()

    monkeypatch.setattr(models, "from_pretrained", fake_from_pretrained)
    model = models.choose_model(kind)
    assert model == REAL_MODEL
    assert f"Model: {REAL_MODEL} (default on {kind}" in capsys.readouterr().out
    for call in (dict(model=None, dtype=torch.float32, device="cpu"), dict(model=None, dtype="half", device="cpu"),
                 dict(model=model, dtype=torch.float32, device="cpu")):
        load_pipeline(**call, quiet=True)
    assert loaded == [REAL_MODEL] * 3


def test_choose_model_on_a_cpu_is_shapes_and_honours_the_env(monkeypatch, simulate_device, capsys):
    simulate_device("cpu")
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    assert model_kind(choose_model()) == "shapes"
    monkeypatch.setenv("TUTORIAL_MODEL", "tiny")
    assert model_kind(choose_model("cuda")) == "tiny"
    assert model_kind(choose_model("cuda", "shapes")) == "shapes"
    assert capsys.readouterr().out.count("Model: ") == 3


def _stderr_of(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRANSFORMERS_VERBOSITY": "warning"})
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_importing_the_pipeline_classes_prints_nothing_on_stderr():
    import importlib.util

    quiet = _stderr_of("import helpers; "  # importing helpers hides the notice: nothing else to call
                       "from diffusers import StableDiffusionPipeline, DiffusionPipeline; "
                       "import logging; logging.getLogger('transformers.utils.import_utils').warning('other notice')")
    # The torchvision notice is gone; any other warning still shows.
    assert "torchvision" not in quiet and quiet.strip().splitlines()[-1].endswith("other notice")
    if importlib.util.find_spec("torchvision") is None:  # without helpers, the notice is there: the test can fail
        assert "requires torchvision" in _stderr_of("from diffusers import StableDiffusionPipeline")


# Pinned pictures, as diffusers' own tests pin an expected slice: the mean over colours of every 16th pixel, for a
# fixed prompt and seed in float32 (identical to 4 decimals on an AMX CPU and with the ISA capped at AVX2). A
# changed initialisation, scheduler configuration or tokenizer moves them far beyond the tolerance.
TINY_PIXELS = [[0.4945, 0.4595, 0.4782, 0.5237], [0.4865, 0.5586, 0.63, 0.5139],
               [0.4165, 0.488, 0.5543, 0.5699], [0.3882, 0.5806, 0.528, 0.5198]]


def test_tiny_draws_its_pinned_pixels(tiny_pipe):
    image = tiny_pipe("portrait photo of a old warrior chief", num_inference_steps=2,
                      generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.abs(image[::16, ::16].mean(-1) - np.array(TINY_PIXELS)).max() < 1e-2


SD15_RANDOM_PIXELS = [[0.5107, 0.5145, 0.5291, 0.5427], [0.5173, 0.5351, 0.6971, 0.5925],
                      [0.5302, 0.5617, 0.7438, 0.6424], [0.5402, 0.37, 0.6316, 0.5969]]


@pytest.mark.other_model  # builds SD 1.5's full size (4.3 GB of float32 weights): make test-models
def test_sd15_random_draws_its_pinned_pixels():
    pipe = load_pipeline("sd15-random", dtype=torch.float32, device="cpu", quiet=True)
    image = pipe("portrait photo of a old warrior chief", height=64, width=64, num_inference_steps=1,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.abs(image[::16, ::16].mean(-1) - np.array(SD15_RANDOM_PIXELS)).max() < 1e-2


def test_05_gets_shapes_flux_on_a_cpu_and_a_flux_model_only(monkeypatch, capsys):
    from helpers import models

    monkeypatch.delenv(models.FLUX_ENV_VAR, raising=False)
    model_id = models.choose_flux_model("cpu")
    assert model_kind(model_id) == "shapes-flux" and (Path(model_id) / "model_index.json").is_file()
    assert "Model: shapes-flux (default on cpu" in capsys.readouterr().out
    monkeypatch.setenv(models.FLUX_ENV_VAR, "shapes")  # a UNet model: one line that says what 05 takes
    with pytest.raises(TutorialError, match="'shapes' is not a Flux pipeline"):
        models.choose_flux_model("cpu")
    with pytest.raises(TutorialError, match="'shapes-flux' is a Flux pipeline"):
        models.resolve_model("shapes-flux")  # 01-04 and the commands: UNet models only


def test_05_falls_back_in_one_line_where_flux_cannot_be_had(monkeypatch):
    from helpers import models

    class Card:
        total_memory = 15 * 2**30  # a T4

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Card)
    spec, why = models._default_flux(torch.device("cuda"))
    assert spec == "shapes-flux" and "cannot hold" in why
    Card.total_memory = 80 * 2**30
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: "no (offline)")
    spec, why = models._default_flux(torch.device("cuda"))
    assert spec == "shapes-flux" and "the Hub does not answer" in why
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: "yes (https://huggingface.co, HTTP 200)")
    assert models._default_flux(torch.device("cuda"))[0] == models.REAL_FLUX
