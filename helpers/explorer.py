"""An ipywidgets panel to try settings by hand; its button calls ``generate``, a plain function tests call directly."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

PRECISIONS = ("float32", "bfloat16", "float16")


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
    """What the `shapes` judge sees in ``image``, and whether it matches the colour, shape and background asked."""
    from .shapes import judge, parse_prompt

    seen = dict(zip(("colour", "shape", "background"), judge(image), strict=True))
    said = f"sees a {seen['colour']} {seen['shape']} on a {seen['background']} background"
    asked = parse_prompt(prompt)
    if asked is None:
        return f"{said} (the prompt is not one of this world's captions, such as 'a red circle', to compare with)"
    wrong = [what for what, value in asked.items() if value is not None and seen[what] != value]
    return f"{said}: " + ("matches the prompt" if not wrong else f"wrong {' and '.join(wrong)}")


class Explorer:
    """Generates with chosen settings from one pipeline, keeping a copy per precision and sharing nothing it changes."""

    def __init__(self, pipeline, judged: bool = False):
        self.base, self.judged = pipeline, judged
        self.schedulers = {cls.__name__: cls for cls in pipeline.scheduler.compatibles}
        self.schedulers.setdefault(type(pipeline.scheduler).__name__, type(pipeline.scheduler))
        self._copies = {pipeline.unet.dtype: pipeline}

    def precisions(self) -> list[str]:
        """The precisions on offer: float32 and this device's 16-bit type (bfloat16 on a CPU, float16 elsewhere)."""
        from .device import as_dtype

        return [name for name in PRECISIONS if as_dtype(name) in (torch.float32, as_dtype("half", self.base.device))]

    def _pipeline(self, precision: str, scheduler: str):
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
        if scheduler not in self.schedulers:
            raise ValueError(f"Unknown scheduler {scheduler!r}: use one of {', '.join(sorted(self.schedulers))}.")
        from .device import as_dtype

        dtype = as_dtype(precision)
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
