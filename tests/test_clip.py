"""The CLIP judge's mechanics, offline: a CLIP built in code at toy size (random weights), its processor with the
project's own tokenizer. What it decides with real weights is not tested here: nothing can be downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import clip as clip_module
from helpers.clip import DISTRACTORS, ClipJudge, clip_judge
from helpers.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def toy_judge() -> ClipJudge:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    texts = (*DISTRACTORS, "a red circle on white")
    words = sorted({word.strip(",.").lower() for text in texts for word in text.split()})
    tokenizer = build_tokenizer(words)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16,
    )
    torch.manual_seed(0)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    return ClipJudge(CLIPModel(config).eval(), processor)


def pictures(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_scores_are_cosine_similarities_times_100(toy_judge):
    scores = toy_judge.similarity(pictures(3), ["a red circle", "a bowl of fruit"])
    assert scores.shape == (3, 2) and np.all(np.abs(scores) <= 100 + 1e-3)
    again = toy_judge.scores(pictures(3), "a red circle")
    assert np.allclose(again, scores[:, 0], atol=1e-4)  # one text at a time gives the same numbers


def test_zero_shot_picks_the_prompt_only_when_it_beats_every_distractor(toy_judge, monkeypatch):
    images = pictures(2)
    verdicts = toy_judge.picks(images, ["a red circle", "a red circle"])
    assert len(verdicts) == 2 and all(isinstance(v, bool) for v in verdicts)
    others = len(DISTRACTORS)
    rows = iter([np.array([[30.0] + [20.0] * others]), np.array([[30.0, 31.0] + [0.0] * (others - 1)])])
    monkeypatch.setattr(ClipJudge, "similarity", lambda self, images, texts: next(rows))
    assert toy_judge.picks(images, ["a red circle", "a red circle"]) == [True, False]


def test_an_unreachable_clip_is_a_one_line_reason(monkeypatch):
    from helpers.errors import TutorialError

    def offline(repo_id, filename="model_index.json"):
        raise TutorialError(f"Could not load {repo_id!r} (offline).")

    monkeypatch.setattr("helpers.models.check_hub", offline)
    monkeypatch.setattr(clip_module, "_LOADED", {})
    reason = clip_judge("cpu")
    assert isinstance(reason, str) and reason.startswith("the CLIP judge (openai/clip-vit-base-patch16) could not")
    assert "\n" not in reason
