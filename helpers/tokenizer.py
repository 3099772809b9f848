"""A CLIP tokenizer with a small, fixed vocabulary: the same token ids in every process."""

from __future__ import annotations

from transformers import CLIPTokenizer

SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def byte_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE maps bytes to, in byte order (as GPT-2 and CLIP do)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_tokenizer(words: list[str] | tuple[str, ...], model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer that keeps each of ``words`` whole; other text falls back to single bytes.

    The vocabulary is built in a fixed order from ``words`` alone (no training), so it is identical in every process.
    """
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for word in dict.fromkeys(w.lower() for w in words):  # unique, in the given order
        if not word.isascii() or not word.isalpha():
            raise ValueError(f"Tokenizer words must be plain ASCII letters, got {word!r}.")
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if merged not in known:
                merges.append((left, right))
                tokens.append(merged)
                known.add(merged)
            left = merged
    tokens += list(SPECIALS)
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
