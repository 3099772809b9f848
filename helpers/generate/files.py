"""The files of a ``helpers.generate`` run: the prompt file, the pictures, the journals, settings.json and index.csv.

A run's folder holds ``NNNNN.png`` per prompt line, ``.generate/settings.json`` and one ``journal-RANK.jsonl`` per
process (a record per finished picture), and ``index.csv`` once every picture is there.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import TutorialError

STATE = ".generate"  # DIR/.generate/ holds settings.json and one journal per rank
INDEX_COLUMNS = ["line", "prompt", "seed", "file", "seconds", "rank", "processes", "settings"]


@dataclass(frozen=True)
class Settings:
    """Everything besides the prompt and the line that decides a picture's bytes."""

    model: str
    dtype: str
    scheduler: str
    steps: int
    guidance: float
    seed: int
    batch: int
    height: int
    width: int
    threads: int | None  # threads per process on a CPU (they change the rounding there); None on a GPU

    def text(self) -> str:
        """One line for index.csv, e.g. 'model=tiny dtype=bfloat16 scheduler=dpm++ steps=20 ...'."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def read_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, prompt) for every non-blank line of a UTF-8 text file; a one-line error if there are none."""
    path = Path(path)
    fix = "give a UTF-8 text file with one prompt per line"
    if not path.exists():
        raise TutorialError(f"{str(path)!r} does not exist: {fix}.")
    if not path.is_file():
        raise TutorialError(f"{str(path)!r} is not a file: {fix}.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise TutorialError(f"{str(path)!r} is not a text file: {fix}.")
    prompts = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise TutorialError(f"{str(path)!r} has no prompts: {fix}.")
    return prompts


def picture_name(line: int) -> str:
    """The file name of a line's picture: 00001.png for line 1."""
    return f"{line:05d}.png"


def batches(prompts: list[tuple[int, str]], size: int) -> list[list[tuple[int, str]]]:
    """Consecutive lines in groups of ``size``: the same groups whatever the number of processes."""
    return [prompts[i:i + size] for i in range(0, len(prompts), size)]


def picture_ok(path: Path, width: int, height: int) -> bool:
    """Whether a PNG is complete: it opens, decodes, and has the expected size."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.size == (width, height)
    except (OSError, SyntaxError, ValueError):
        return False


def read_journal(out: Path) -> dict[int, dict]:
    """The newest record of each line from every rank's journal in ``out/.generate`` (torn lines are skipped)."""
    records: dict[int, dict] = {}
    for journal in sorted((out / STATE).glob("journal-*.jsonl")):
        for text in journal.read_text(errors="replace").splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            old = records.get(record["line"])
            if old is None or record["time"] >= old["time"]:
                records[record["line"]] = record
    return records


def check_out_dir(out: Path) -> dict | None:
    """The settings of an earlier run into ``out`` (None for a new or empty folder); refuse anyone else's folder."""
    if out.exists() and not out.is_dir():
        raise TutorialError(f"--out {str(out)!r} is a file: choose a folder (new, empty, or from an earlier run).")
    settings = out / STATE / "settings.json"
    if settings.is_file():
        try:
            return json.loads(settings.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TutorialError(f"{settings} is damaged: choose another --out.") from None
    if (out / STATE).is_dir():  # stopped before its settings were written: nothing else was made
        return None
    if out.is_dir() and any(out.iterdir()):
        raise TutorialError(f"--out {str(out)!r} holds files not made by helpers.generate: choose a new or empty "
                            "folder (your files are never overwritten).")
    return None


def done_lines(out: Path, prompts: list[tuple[int, str]], settings: Settings) -> set[int]:
    """Lines whose picture is complete and recorded for the same prompt and seed."""
    records = read_journal(out)
    done = set()
    for line, prompt in prompts:
        record = records.get(line)
        if (record and record["prompt"] == prompt and record["seed"] == settings.seed + line
                and picture_ok(out / picture_name(line), settings.width, settings.height)):
            done.add(line)
    return done


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, then rename it: an interruption never leaves a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def png_bytes(image, prompt: str, seed: int, settings: Settings) -> bytes:
    """The picture as PNG bytes, with its prompt, seed and settings in text chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("seed", str(seed))
    info.add_text("settings", settings.text())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def refuse_other_settings(out: Path, earlier: dict | None, settings: dict) -> None:
    """A one-line error naming what changed (e.g. 'steps 20 -> 4') if ``out`` holds a run with other settings."""
    if earlier is None:
        return
    changed = ", ".join(f"{k} {earlier.get(k)} -> {v}" for k, v in settings.items() if earlier.get(k) != v)
    if changed:
        raise TutorialError(f"--out {str(out)!r} holds an earlier run with other settings ({changed}): rerun with "
                            "its options to resume, or choose another --out.")


def write_index(out: Path, prompts: list[tuple[int, str]]) -> int:
    """Write out/index.csv from the journals, one row per prompt line; returns how many lines have no picture."""
    records = read_journal(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    missing = 0
    for line, prompt in prompts:
        record = records.get(line)
        if record is None or record["prompt"] != prompt:
            missing += 1
            continue
        writer.writerow(record)
    write_atomic(out / "index.csv", buffer.getvalue().encode())
    return missing


