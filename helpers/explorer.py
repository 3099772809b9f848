"""An ipywidgets panel to try settings by hand; its button calls ``generate``, a plain function tests call directly."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Generation:
    """One picture with its settings, the seconds it took and, on `shapes`, the judge's verdict."""

    image: object = field(repr=False)
    seconds: float
    settings: dict
    verdict: str | None = None

    def __str__(self) -> str:
        s = self.settings
        line = (f"{s['prompt']!r}: {s['scheduler']}, {s['steps']} steps, guidance {s['guidance']:g}, seed {s['seed']}, "
                f"{s['precision']}: {self.seconds:.2f} s")
        return line + (f"\njudge: {self.verdict}" if self.verdict else "")

    __repr__ = __str__


def verdict(prompt: str, image) -> str:
    """What the `shapes` judge sees in ``image``, and whether it matches the colour and shape that ``prompt`` names."""
    from .shapes import COLOURS, SHAPES, judge

    colour, shape, background = judge(image)
    words = prompt.lower().replace(",", " ").split()
    asked_colour = next((c for c in COLOURS if c in words), None)
    asked_shape = next((s for s in SHAPES if s in words), None)
    seen = f"a {colour} {shape} on a {background} background"
    if asked_colour is None or asked_shape is None:
        return f"sees {seen} (the prompt names no colour and shape of this world to compare with)"
    ok = [what for what, good in (("colour", colour == asked_colour), ("shape", shape == asked_shape)) if good]
    wrong = [what for what in ("colour", "shape") if what not in ok]
    return f"sees {seen}: " + ("matches the prompt" if not wrong else f"wrong {' and '.join(wrong)}")


class Explorer:
    """Generates with chosen settings from one pipeline, keeping a copy per precision and sharing nothing it changes."""

    def __init__(self, pipeline, judged: bool = False):
        self.base, self.judged = pipeline, judged
        self.schedulers = {cls.__name__: cls for cls in pipeline.scheduler.compatibles}
        self.schedulers.setdefault(type(pipeline.scheduler).__name__, type(pipeline.scheduler))
        self._copies = {pipeline.unet.dtype: pipeline}

    def precisions(self) -> list[str]:
        """The precisions on offer: float32 and this device's 16-bit type (bfloat16 on a CPU, float16 elsewhere)."""
        from .device import half_dtype

        half = half_dtype(self.base.device)
        return [name for name, dtype in DTYPES.items() if dtype in (torch.float32, half)]

    def _pipeline(self, precision: str, scheduler: str):
        if precision not in DTYPES:
            raise ValueError(f"Unknown precision {precision!r}: use one of {', '.join(DTYPES)}.")
        if scheduler not in self.schedulers:
            raise ValueError(f"Unknown scheduler {scheduler!r}: use one of {', '.join(sorted(self.schedulers))}.")
        dtype = DTYPES[precision]
        if dtype not in self._copies:  # a copy, so the notebook's own pipeline keeps its precision
            self._copies[dtype] = copy.deepcopy(self.base).to(dtype=dtype)
        pipe = self._copies[dtype]
        new = self.schedulers[scheduler].from_config(self.base.scheduler.config)
        pipe = type(pipe).from_pipe(pipe, scheduler=new)  # same modules, its own scheduler
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, prompt: str, scheduler: str = "DPMSolverMultistepScheduler", steps: int = 20,
                 guidance: float = 7.5, seed: int = 0, precision: str = "float32") -> Generation:
        """One picture for these settings (a CPU generator seeded ``seed``), timed, and judged on `shapes`."""
        if not prompt.strip():
            raise ValueError("The prompt is empty: type what the picture should show.")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}.")
        pipe = self._pipeline(precision, scheduler)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        start = time.perf_counter()
        image = pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance),
                     generator=generator).images[0]
        seconds = time.perf_counter() - start
        settings = dict(prompt=prompt, scheduler=scheduler, steps=int(steps), guidance=float(guidance),
                        seed=int(seed), precision=precision)
        return Generation(image, seconds, settings, verdict(prompt, image) if self.judged else None)


class ExplorerPanel:
    """The widgets: prompt, scheduler, steps, guidance, seed, precision, a Generate button and an output area."""

    def __init__(self, explorer: Explorer, prompt: str, scheduler: str = "DPMSolverMultistepScheduler",
                 steps: int = 20, guidance: float = 7.5, seed: int = 0, precision: str = "float32"):
        import ipywidgets as w

        self.explorer = explorer
        self.prompt = w.Text(value=prompt, description="prompt", layout=w.Layout(width="420px"))
        self.scheduler = w.Dropdown(options=sorted(explorer.schedulers), value=scheduler, description="scheduler")
        self.steps = w.IntSlider(value=steps, min=1, max=100, description="steps")
        self.guidance = w.FloatSlider(value=guidance, min=0.0, max=15.0, step=0.5, description="guidance")
        self.seed = w.IntText(value=seed, description="seed")
        self.precision = w.Dropdown(options=explorer.precisions(), value=precision, description="precision")
        self.button = w.Button(description="Generate", button_style="primary")
        self.output = w.Output()
        self.controls = [self.prompt, self.scheduler, self.steps, self.guidance, self.seed, self.precision]
        self.widget = w.VBox([*self.controls, self.button, self.output])
        self.last: Generation | None = None
        self.button.on_click(self._clicked)

    def settings(self) -> dict:
        """The settings the widgets show now, as keyword arguments for ``Explorer.generate``."""
        return dict(prompt=self.prompt.value, scheduler=self.scheduler.value, steps=self.steps.value,
                    guidance=self.guidance.value, seed=self.seed.value, precision=self.precision.value)

    def _clicked(self, _button=None) -> None:
        from IPython.display import display

        self.output.clear_output(wait=True)
        with self.output:
            try:
                self.last = self.explorer.generate(**self.settings())
            except ValueError as err:
                print(f"error: {err}")
                return
            display(self.last.image)
            print(self.last)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
