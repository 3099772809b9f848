import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TutorialError
from helpers.choice import MODELS, cache_dir, choose_model, choose_vae, family, folder_size, materialise

ROOT = Path(__file__).resolve().parents[1]


def test_presets_become_folders_that_from_pretrained_loads():
    from diffusers import AutoencoderKL, DiffusionPipeline

    model_id = choose_model("cpu", "tiny", quiet=True)
    assert Path(model_id).resolve() == (cache_dir() / "tiny").resolve()
    pipeline = DiffusionPipeline.from_pretrained(model_id, use_safetensors=True)
    assert pipeline.unet.dtype == torch.float32 and pipeline.text_encoder.dtype == torch.float32
    vae = AutoencoderKL.from_pretrained(choose_vae(model_id), use_safetensors=True)
    assert not torch.equal(vae.decoder.conv_out.weight, pipeline.vae.decoder.conv_out.weight)
    assert family(model_id) == "tiny" and folder_size(model_id) > 0


def test_materialise_reuses_the_folder():
    first = materialise("tiny")
    stamp = (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert materialise("tiny") == first
    assert (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_cpu_default_is_the_shipped_shapes_model(monkeypatch):
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    model_id = choose_model("cpu", quiet=True)
    assert Path(model_id).resolve() == (MODELS / "shapes").resolve() and family(model_id) == "shapes"
    assert Path(choose_vae(model_id)).resolve() == (MODELS / "shapes-vae-ft").resolve()


def test_gpu_default_is_the_real_model_checked_before_loading(monkeypatch, tmp_path):
    # No Hub here: the check itself must give the one-line error, before any download starts.
    monkeypatch.delenv("TUTORIAL_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = "from helpers.choice import choose_model\nchoose_model('cuda')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert "TutorialError" in proc.stderr and "stable-diffusion-v1-5/stable-diffusion-v1-5" in proc.stderr
    assert "TUTORIAL_MODEL=shapes" in proc.stderr


def test_unreachable_hub_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("helpers.__main__.hub_reachable", lambda timeout=3.0: "no (test)")
    with pytest.raises(TutorialError, match="unreachable .*TUTORIAL_MODEL=shapes.*HF_HUB_OFFLINE=1"):
        choose_model("cpu", "someone/some-model", quiet=True)


def test_missing_shapes_folder_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr("helpers.choice.MODELS", tmp_path)
    with pytest.raises(TutorialError, match="make shapes"):
        choose_model("cpu", "shapes", quiet=True)
