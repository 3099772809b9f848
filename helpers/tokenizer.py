"""CLIP and T5 tokenizers with a small, fixed vocabulary, built in code: the same token ids in every process."""

from __future__ import annotations

import string

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


def build_t5_tokenizer(words: list[str] | tuple[str, ...], model_max_length: int = 512):
    """A T5 tokenizer (SentencePiece-style Unigram, as ``google/t5-v1_1-*``) that keeps each of ``words`` whole.

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 (T5's), the word-start mark, then the words in the given order, then
    single ASCII letters and digits that spell any other word; anything else is ``<unk>``. Case-sensitive, as T5 is
    (a normalizer would not survive ``save_pretrained``: ``T5Tokenizer`` rebuilds its pipeline from the vocabulary).
    No sentinel (``<extra_id_*>``) tokens. ``save_pretrained`` writes ``tokenizer.json``, which
    ``T5Tokenizer.from_pretrained`` reads offline.
    """
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for word in dict.fromkeys(words):  # unique, in the given order
        if not word.isascii() or not word.isalpha():
            raise ValueError(f"Tokenizer words must be plain ASCII letters, got {word!r}.")
        vocab.append(("\u2581" + word, -1.0))  # a whole word outscores its letters (-2 - 5 per letter)
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)
