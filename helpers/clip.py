"""A CLIP judge for a trained model's pictures other than `shapes` (the real SD 1.5, a fine-tune): 01-03's checks.

CLIP embeds pictures and texts in one space; the cosine similarity of a picture and a text, times 100, is the
*CLIP score* (Hessel et al. 2021), and picking the most similar of several texts is CLIP's *zero-shot*
classification (Radford et al. 2021). The checkpoint is ``openai/clip-vit-base-patch16``, the one diffusers'
evaluation guide scores with; it is downloaded once from the Hub (about 600 MB) and loaded once per process
(safetensors where the checkpoint has them; else transformers reads its .bin with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CLIP_ID = "openai/clip-vit-base-patch16"
# Texts a picture must score below its own prompt, for zero-shot: other subjects, and the failures a broken
# pipeline shows (noise, a flat colour, a black frame).
DISTRACTORS = ("a landscape with mountains and a lake", "a bowl of fruit on a table", "a city street at night",
               "a red sports car", "a cartoon of a cat", "a page of printed text", "colourful random noise",
               "a plain gray square", "a completely black image")


@dataclass
class ClipJudge:
    """A CLIP model and its processor, with the two measurements the checks use."""

    model: torch.nn.Module
    processor: object

    @torch.inference_mode()
    def similarity(self, images: Sequence, texts: Sequence[str]) -> np.ndarray:
        """CLIP scores: 100 x the cosine similarity of each picture (rows) with each text (columns)."""
        inputs = self.processor(text=list(texts), images=list(images), return_tensors="pt", padding=True)
        device = next(self.model.parameters()).device
        out = self.model(**{name: value.to(device) for name, value in inputs.items()})
        pictures = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        words = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (100 * pictures @ words.T).cpu().numpy()

    def scores(self, images: Sequence, text: str) -> np.ndarray:
        """Each picture's CLIP score with one text."""
        return self.similarity(images, [text])[:, 0]

    def picks(self, images: Sequence, prompts: Sequence[str]) -> list[bool]:
        """Zero-shot: whether each picture scores higher with its own prompt than with every distractor."""
        answers = []
        for image, prompt in zip(images, prompts, strict=True):
            row = self.similarity([image], [prompt, *DISTRACTORS])[0]
            answers.append(bool(row[0] > row[1:].max()))
        return answers


_LOADED: dict[tuple[str, str], ClipJudge] = {}


def clip_judge(device: str | torch.device = "cpu", model_id: str = CLIP_ID) -> ClipJudge | str:
    """The CLIP judge on ``device``, loaded once; where it cannot be had (no Hub, not cached), the reason, one line."""
    key = (model_id, str(device))
    if key not in _LOADED:
        from transformers import CLIPModel, CLIPProcessor

        from .errors import TutorialError
        from .models import check_hub, quiet_logs

        try:
            check_hub(model_id, "config.json")
            with quiet_logs():
                try:
                    model = CLIPModel.from_pretrained(model_id, use_safetensors=True)
                except OSError:  # a checkpoint without .safetensors: transformers reads .bin with weights_only=True
                    model = CLIPModel.from_pretrained(model_id)
                processor = CLIPProcessor.from_pretrained(model_id)
            model = model.eval().to(device)
        except (TutorialError, OSError) as err:
            return f"the CLIP judge ({model_id}) could not be loaded: {str(err).splitlines()[0]}"
        _LOADED[key] = ClipJudge(model, processor)
    return _LOADED[key]
