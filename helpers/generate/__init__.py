"""``python -m helpers.generate PROMPTS.txt --out DIR``: the tutorial's recipe on many prompts, in 1..N processes.

One prompt per line (blank lines are skipped). Each picture is ``DIR/NNNNN.png`` for line NNNNN of the file, made
with its own CPU generator seeded ``--seed`` + line number, so a picture depends only on its line and the settings.
By default: the recipe's precision (``device.recipe_dtype``: float32 on a CPU that would emulate bfloat16),
DPM-Solver++ at 20 steps, guidance 7.5, and the largest batch that fits (probed on CUDA; 4 elsewhere). Batches are
consecutive lines, formed the same way whatever the number of processes; the list of batches is split between
processes with Accelerate's ``PartialState``, so 1 or N processes write the same files with the same bytes. Batch
size is part of the settings: batched matrix products can round differently from single ones, so a picture can
differ (slightly, or more over many steps) under another batch size. On a CPU, so is the number of threads per
process (``--threads``), for the same reason.

``DIR/index.csv`` (line, prompt, seed, file, seconds, rank, processes, settings) is written once, by the main
process, when every picture is there. A rerun into the same DIR resumes: it keeps every picture that opens, has
the right size and is recorded for the same prompt, and makes the rest; an interrupted run loses at most the batch
in flight. Scale out with ``accelerate launch`` (the repository's docs/many-prompts.md). ``files`` holds the run's
files, ``run`` the command.
"""
