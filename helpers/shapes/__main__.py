"""python -m helpers.shapes train | train-flux | eval | grid: retrain the `shapes` checkpoint or train its Flux-class
sibling `shapes-flux`, measure how well either follows prompts, or draw the VAEs' reconstructions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import TutorialError
from ..models import SHIPPED_NAMES, shapes_folder

SHIPPED = Path(__file__).resolve().parent / "weights"  # the checkpoints the package ships


def _configured(cfg, args):
    """``cfg`` with the command line's --seed and --set applied."""
    if args.seed is not None:
        cfg.seed = args.seed
    for setting in args.set:
        _set(cfg, setting)
    return cfg


def _train(args) -> None:
    from .train import PHASE_4_SETTINGS, Config, train

    out = Path(args.out).resolve()
    if out == SHIPPED.resolve() and not args.ship:
        raise TutorialError(f"{args.out} holds the shipped model: add --ship to overwrite it on purpose.")
    cfg = _configured(Config.micro() if args.micro else Config(), args)
    _check(cfg)
    if args.resume and args.vae_phases:
        raise TutorialError("--resume reuses phases 1-3 already: give it or --vae-phases, not both.")
    if args.resume and (unused := [name for name in (s.partition("=")[0] for s in args.set)
                                   if name not in PHASE_4_SETTINGS]):
        raise TutorialError(f"--resume reruns phase 4 only, so --set {', '.join(unused)} would not reach the model; "
                            f"with --resume, --set takes {', '.join(PHASE_4_SETTINGS)}.")
    vae_phases = Path(args.vae_phases) if args.vae_phases else None
    if vae_phases is not None and vae_phases.exists() and not vae_phases.is_file():
        raise TutorialError(f"{args.vae_phases}: a folder; --vae-phases takes a file, "
                            "e.g. build/vae-phases.safetensors.")
    report = train(cfg, out, resume=Path(args.resume) if args.resume else None, vae_phases=vae_phases)
    seconds = report["seconds"]
    if "vae_phases_from" in report:
        print(f"phases 1-2 read from {report['vae_phases_from']}; this run trained the UNet + text encoder in "
              f"{seconds['unet']:.0f} s and the decoder further in {seconds['vae_ft']:.0f} s; with phases 1-2 as "
              "timed when they were saved:")
    elif vae_phases is not None:
        print(f"saved phases 1-2 to {vae_phases}: runs given it with the same VAE settings start from there")
    print(f"trained in {seconds['total'] / 60:.1f} min (VAE {seconds['vae']:.0f} s, decoder "
          f"{seconds['vae_decoder']:.0f} s, UNet + text encoder {seconds['unet']:.0f} s, decoder further "
          f"{seconds['vae_ft']:.0f} s)")
    print(f"PSNR on held-out pictures: the pipeline's VAE {report['psnr']['vae']:.2f} dB, the fine-tuned VAE "
          f"{report['psnr']['vae_ft']:.2f} dB (after phase 1: {report['psnr']['vae_phase1']:.2f} dB)")
    print(f"saved {out / 'shapes'} and {out / 'shapes-vae-ft'}")


def _train_flux(args) -> None:
    from .flux import FluxConfig, check_config, train

    out = Path(args.out or (SHIPPED / "shapes-flux" if args.ship else "build/shapes-flux")).resolve()
    if out.is_relative_to(SHIPPED.resolve()) and not args.ship:
        raise TutorialError(f"{args.out} is inside the shipped weights: add --ship to write there on purpose.")
    if not (Path(args.vae) / "config.json").is_file():
        raise TutorialError(f"{args.vae}: no VAE there (no config.json); give a shapes-vae-ft folder with --vae.")
    cfg = _configured(FluxConfig.micro() if args.micro else FluxConfig(), args)
    try:
        check_config(cfg)
    except (ValueError, TypeError) as err:
        raise TutorialError(f"the models cannot be built with these settings ({err}).") from None
    if args.snapshot_every < 0:
        raise TutorialError(f"--snapshot-every {args.snapshot_every}: give a number of steps, or 0 for no snapshots.")
    if args.snapshot_every and args.ship:
        raise TutorialError("--snapshot-every with --ship would put snapshots into the shipped weights: train into "
                            "build/ (no --ship) to take snapshots.")
    if args.snapshot_every and (out / "snapshots").exists():
        raise TutorialError(f"{out / 'snapshots'} holds an earlier run's snapshots: delete it or give another --out.")
    if args.snapshot_every >= cfg.steps:
        print(f"no snapshots: --snapshot-every {args.snapshot_every} is not below the {cfg.steps} steps (the last "
              "step's weights are the saved pipeline itself)")
    report = train(cfg, out, vae=args.vae, snapshot_every=args.snapshot_every)
    steps_seconds = report["seconds"] - report["pool_seconds"]
    print(f"trained in {report['seconds'] / 60:.1f} min ({report['pool_seconds'] / 60:.1f} min to encode the pool, "
          f"then {steps_seconds / cfg.steps:.2f} s per step of {cfg.batch}); loss over the last 100 steps "
          f"{report['loss']:.4f}")
    print(f"saved {out} ({report['parameters']['transformer']:,} transformer parameters)")


def _check(cfg) -> None:
    """Refuse settings the models cannot be built with, or that leave a phase without a step, before training."""
    import dataclasses

    from .train import make_unet, make_vae

    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name.endswith(("_steps", "_batch")) and field.name != "decoder_more_steps" and value < 1:
            raise TutorialError(f"--set {field.name}={value}: it must be 1 or more.")
        if isinstance(value, tuple) and not all(isinstance(v, int) and v > 0 for v in value):
            raise TutorialError(f"--set {field.name}={value}: give positive whole numbers, e.g. (32, 64, 64).")
    try:
        make_vae(cfg), make_unet(cfg)
    except (ValueError, TypeError) as err:
        raise TutorialError(f"the models cannot be built with these settings ({err}).") from None


def _set(cfg, setting: str) -> None:
    """Apply one ``--set NAME=VALUE`` to the config, VALUE a Python literal of the setting's type."""
    import ast
    import dataclasses

    name, _, text = setting.partition("=")
    fields = {field.name for field in dataclasses.fields(cfg)}
    if name not in fields:
        raise TutorialError(f"--set {setting}: give NAME=VALUE with NAME one of Config's settings "
                            f"({', '.join(sorted(fields))}).")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise TutorialError(f"--set {setting}: {text!r} is not a Python literal (a number, True/False or a tuple)."
                            ) from None
    old = getattr(cfg, name)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(old):
        raise TutorialError(f"--set {setting}: {name} takes a value of type {type(old).__name__}, like {old!r}.")
    setattr(cfg, name, value)


def _model_folders(args) -> tuple[Path, Path]:
    """The pipeline folder and its fine-tuned VAE (by default the ``shapes-vae-ft`` beside it), both checked."""
    model = Path(args.model)
    vae = Path(args.vae) if args.vae else model.parent / "shapes-vae-ft"
    if not (model / "vae" / "config.json").is_file():
        raise TutorialError(f"{args.model}: not a shapes pipeline folder (no vae/config.json); give the folder that "
                            "make shapes writes (build/shapes/shapes), or a shipped model's name: shapes, shapes-flux.")
    if not (vae / "config.json").is_file():
        raise TutorialError(f"{vae}: no fine-tuned VAE there (no config.json); give it with --vae.")
    return model, vae


def _pipeline_class(folder: Path) -> str | None:
    """The pipeline class a folder's model_index.json names (``StableDiffusionPipeline``, ``FluxPipeline``)."""
    import json

    index = folder / "model_index.json"
    return json.loads(index.read_text()).get("_class_name") if index.is_file() else None


def _check_eval_args(args) -> None:
    """Refuse, in one line, a number of seeds or a device the eval cannot use, before the model loads."""
    import torch

    if args.seeds < 1:
        raise TutorialError(f"--seeds {args.seeds}: give 1 or more seeds per prompt (8 by default).")
    if args.device is None:
        return
    try:
        kind = torch.device(args.device).type
    except RuntimeError:
        raise TutorialError(f"--device {args.device}: give cpu, cuda (or cuda:N) or mps.") from None
    if not {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind):
        raise TutorialError(f"--device {args.device}: this PyTorch has no such device here; leave --device out for "
                            f"the best available one.")


def _eval(args) -> None:
    from .evaluate import evaluate

    _check_eval_args(args)
    if _pipeline_class(Path(args.model)) == "FluxPipeline":
        from . import flux

        scale = flux.CFG_SCALE if args.true_cfg is None else args.true_cfg
        if scale <= 1:
            raise TutorialError(f"--true-cfg {args.true_cfg}: give a scale above 1 (the eval runs without CFG too).")
        flux.evaluate(args.model, seeds=args.seeds, device=args.device, cfg_scale=scale)
        return
    if args.true_cfg is not None:
        raise TutorialError("--true-cfg is for a FluxPipeline folder (shapes-flux); shapes uses guidance 7.5.")
    model, vae = _model_folders(args)
    evaluate(str(model), str(vae), seeds=args.seeds, device=args.device)


def _grid(args) -> None:
    from diffusers import AutoencoderKL

    from .evaluate import reconstruction_grid

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise TutorialError(f"{args.out}: the grid is written as a PNG; give a path ending in .png.")
    model, vae = _model_folders(args)
    vaes = [AutoencoderKL.from_pretrained(path, use_safetensors=True) for path in (model / "vae", vae)]
    out.parent.mkdir(parents=True, exist_ok=True)
    reconstruction_grid(*vaes).save(out)
    print(f"saved {out}: rendered pictures, then {model / 'vae'}'s and {vae}'s reconstructions")


def _model_arguments(parser) -> None:
    parser.add_argument("--model", default=str(SHIPPED / "shapes"),
                        help="a shapes or shapes-flux pipeline folder, or the name of a shipped one, which wins over a "
                        "folder of that name (default: shapes, the shipped helpers/shapes/weights/shapes)")
    parser.add_argument("--vae", default=None,
                        help="its fine-tuned VAE (default: the shapes-vae-ft folder beside --model)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.shapes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the VAE, its fine-tuned decoder, the UNet and text encoder from scratch "
                       "(about 30 min on 2 CPU cores); writes shapes/, shapes-vae-ft/ and training.json")
    p.add_argument("--out", default="build/shapes",
                   help="where to write shapes/, shapes-vae-ft/ and training.json (build/shapes)")
    p.add_argument("--ship", action="store_true",
                   help="allow --out helpers/shapes/weights, overwriting the shipped weights")
    p.add_argument("--micro", action="store_true", help="a few steps of a tiny model, to check the mechanics")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0, the shipped model's)")
    p.add_argument("--resume", default=None,
                   help="an earlier run's output folder: reuse its VAE, UNet and text encoder (phases 1-3) and "
                   "train only the further decoder, shapes-vae-ft (phase 4)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change one of Config's settings for this run, VALUE a Python literal: --set snr_gamma=10.0, "
                   "--set unet_channels=64,128,128 (repeatable); training.json records the whole config")
    p.add_argument("--vae-phases", default=None, metavar="FILE",
                   help="a file for phases 1-2 (the VAE and its decoder): read when it exists, else written after "
                   "them, so reruns skip them and still make the files of a whole run; the file serves runs with "
                   "the same seed, warmup, eval_pictures and vae_*/decoder_*/kl_weight/decode_mean settings")
    p.set_defaults(run=_train)
    p = sub.add_parser("train-flux", help="train shapes-flux, a FluxPipeline (small FluxTransformer2DModel, toy CLIP "
                       "and T5) on shapes-vae-ft's latents; writes the pipeline folder with training.json inside")
    p.add_argument("--out", default=None,
                   help="the pipeline folder to write (build/shapes-flux; with --ship, helpers/shapes/weights/"
                   "shapes-flux)")
    p.add_argument("--ship", action="store_true",
                   help="write the shipped helpers/shapes/weights/shapes-flux (or allow --out inside the weights)")
    p.add_argument("--vae", default=str(SHIPPED / "shapes-vae-ft"),
                   help="the frozen VAE whose latents the transformer learns (the shipped shapes-vae-ft)")
    p.add_argument("--micro", action="store_true", help="a few steps of a tiny model, to check the mechanics")
    p.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                   help="also save the EMA weights every N steps (but the last) to OUT/snapshots/step-N, for a "
                   "learning curve; the final files do not change")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change one of FluxConfig's settings for this run, VALUE a Python literal: --set steps=2000 "
                   "(repeatable); training.json records the whole config")
    p.set_defaults(run=_train_flux)
    p = sub.add_parser("eval", help="judge every colour x shape prompt (8 seeds) and every background prompt "
                       "(2 seeds); print adherence tables, seconds per picture and both VAEs' PSNR; a FluxPipeline "
                       "folder as --model (shapes-flux) is judged with FlowMatch Euler 20, without and with true CFG")
    _model_arguments(p)
    p.add_argument("--seeds", type=int, default=8,
                   help="seeds per colour x shape prompt (8); the background prompts use 2")
    p.add_argument("--device", default=None, help="cpu, cuda (or cuda:N) or mps (default: the best available)")
    p.add_argument("--true-cfg", type=float, default=None, metavar="SCALE",
                   help="shapes-flux only: the true classifier-free guidance scale of its guided run (4)")
    p.set_defaults(run=_eval)
    p = sub.add_parser("grid", help="save rendered pictures above both VAEs' reconstructions, captioned with PSNR "
                       "and stray colour, as a PNG")
    _model_arguments(p)
    p.add_argument("--out", default="build/shapes-vaes.png",
                   help="where to save the grid, replacing a file there (build/shapes-vaes.png)")
    p.set_defaults(run=_grid)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "model", None) in SHIPPED_NAMES:  # a shipped model by name, as TUTORIAL_MODEL takes it
            args.model = str(shapes_folder(args.model))
        args.run(args)
    except TutorialError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
