"""CLIP tokenizers built in memory, so no pipeline ever has to fetch tokenizer files.

Random and tiny weights must build offline, but the text encoders still need token ids in
the real range: the embedding table of every CLIP text encoder these pipelines use has
49,408 rows, and ``<|startoftext|>``/``<|endoftext|>`` sit at 49406/49407. The tokenizer
made here has exactly that vocabulary size and those special ids. Its only "real" entries
are CLIP's byte alphabet (each byte, and each byte ending a word), so it splits text into
characters instead of BPE pieces: prompts become more tokens than with the real merges, but
every call still pads/truncates to 77, so the text encoder does the same work.

Worker only (imports transformers).
"""

from __future__ import annotations

import functools

from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"  # noqa: S105 - a vocabulary token, not a secret
EOS_TOKEN = "<|endoftext|>"  # noqa: S105 - a vocabulary token, not a secret
BOS_ID = 49406
EOS_ID = 49407
MODEL_MAX_LENGTH = 77
# OpenAI's CLIP-L tokenizer pads with <|endoftext|>; the OpenCLIP tokenizers shipped with
# SD 2.x / the x4 upscaler and SDXL's tokenizer_2 pad with "!" (id 0 in both vocabularies).
OPENCLIP_PAD_TOKEN = "!"  # noqa: S105 - a vocabulary token, not a secret


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries).

    Reproduced rather than imported: transformers 5 no longer exports it, and the order
    matters because it fixes ids 0-255 and 256-511 exactly as in the real CLIP vocabulary.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@functools.lru_cache(maxsize=1)
def clip_vocab() -> dict[str, int]:
    """The padded character-level vocabulary (cached: every text encoder shares it)."""
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    # Unreachable fillers (no merge ever produces them) keep the real ids of the specials.
    while len(vocab) < BOS_ID:
        vocab[f"<|filler{len(vocab)}|>"] = len(vocab)
    vocab[BOS_TOKEN] = BOS_ID
    vocab[EOS_TOKEN] = EOS_ID
    return vocab


def clip_tokenizer(pad_token: str = EOS_TOKEN, model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP tokenizer with the real vocabulary size and special ids, built without files.

    ``model_max_length`` must be given: without it transformers 5 fails at call time with
    ``OverflowError: int too big to convert``.
    """
    return CLIPTokenizer(
        vocab=dict(clip_vocab()),
        merges=[],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=model_max_length,
    )
