"""Tokenizers built in memory, so no pipeline ever has to fetch tokenizer files.

Random and tiny weights must build offline, but the text encoders still need token ids in
the real range: the embedding table of every CLIP text encoder these pipelines use has
49,408 rows, and ``<|startoftext|>``/``<|endoftext|>`` sit at 49406/49407. The tokenizer
made here has exactly that vocabulary size and those special ids. Its only "real" entries
are CLIP's byte alphabet (each byte, and each byte ending a word), so it splits text into
characters instead of BPE pieces: prompts become more tokens than with the real merges, but
every call still pads/truncates to 77, so the text encoder does the same work.

The T5 family (SD3's and FLUX's T5-XXL, Wan's UMT5-XXL) gets the same treatment: a Unigram
vocabulary with the real layout (``<pad>``/``</s>``/``<unk>`` at 0/1/2, the sentinel
``<extra_id_N>`` tokens last, 32,100 / 256,300 entries for embedding tables of 32,128 /
256,384 rows) whose pieces are single characters; those pipelines pad T5 to a fixed length.

Qwen-Image's Qwen2.5-VL tokenizer is the exception where the token count is the workload:
the pipeline pads to the longest prompt and drops the first 34 tokens, which the real
tokenizer makes of its fixed system template. The Qwen2 tokenizer here has the real layout
(the byte alphabet at 0-255, ``<|endoftext|>`` at 151643, then ``<|im_start|>``,
``<|im_end|>``... to 151664) and knows the template's words and common prompt words as
whole tokens (by merges learnt on those words), so the template is exactly 34 tokens and an
English prompt about as many as with the real vocabulary; other words fall back to pieces.

Worker only (imports transformers).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import CLIPTokenizer, Qwen2Tokenizer, T5Tokenizer

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


# --- T5 family (SentencePiece Unigram layout) ----------------------------------------------

T5_PAD_TOKEN = "<pad>"  # noqa: S105 - a vocabulary token, not a secret
T5_EOS_TOKEN = "</s>"  # noqa: S105 - a vocabulary token, not a secret
T5_UNK_TOKEN = "<unk>"  # noqa: S105 - a vocabulary token, not a secret
#: google/t5-v1_1-xxl: 32,000 SentencePiece pieces + 100 sentinels (embedding rows: 32,128).
T5_PIECES, T5_EXTRA_IDS = 32_000, 100
#: google/umt5-xxl (Wan's tokenizer): 256,000 pieces + 300 sentinels (embedding rows: 256,384).
UMT5_PIECES, UMT5_EXTRA_IDS = 256_000, 300
T5_MODEL_MAX_LENGTH = 512
_SPACE = "\u2581"  # SentencePiece's word-start marker


@functools.lru_cache(maxsize=2)
def _unigram_pieces(pieces: int, extra_ids: int) -> tuple[tuple[str, float], ...]:
    """(piece, score) in the real id layout: specials, characters, fillers, sentinels last.

    Each printable ASCII character is a piece, alone and starting a word; fillers (never
    produced: no prompt contains them) pad to the real count so the sentinels keep their ids.
    """
    vocab: list[tuple[str, float]] = [(T5_PAD_TOKEN, 0.0), (T5_EOS_TOKEN, 0.0), (T5_UNK_TOKEN, 0.0)]
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    vocab.append((_SPACE, -2.0))
    vocab += [(c, -3.0) for c in chars] + [(_SPACE + c, -3.0) for c in chars]
    vocab += [(f"<|filler{i}|>", -100.0) for i in range(len(vocab), pieces)]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    return tuple(vocab)


@functools.lru_cache(maxsize=2)
def _t5_family(pieces: int, extra_ids: int) -> T5Tokenizer:
    """Cached and shared: a big Unigram takes ~0.5 s to build, and pipelines only read it."""
    return T5Tokenizer(
        vocab=list(_unigram_pieces(pieces, extra_ids)),
        extra_ids=extra_ids,
        model_max_length=T5_MODEL_MAX_LENGTH,
    )


def t5_tokenizer() -> T5Tokenizer:
    """T5-XXL's tokenizer layout (SD3's tokenizer_3, FLUX's tokenizer_2), built without files."""
    return _t5_family(T5_PIECES, T5_EXTRA_IDS)


def umt5_tokenizer() -> T5Tokenizer:
    """UMT5-XXL's tokenizer layout (Wan's tokenizer), built without files."""
    return _t5_family(UMT5_PIECES, UMT5_EXTRA_IDS)


# --- Qwen2 (byte-level BPE layout) ---------------------------------------------------------

#: Ordinary entries of the Qwen2 vocabulary; the special tokens follow from this id on.
QWEN2_REGULAR_TOKENS = 151_643
#: Qwen2/2.5's special tokens in id order, 151643-151664 (the VL model's config names
#: vision_start/end 151652/151653, image_pad 151655, video_pad 151656).
QWEN2_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_MODEL_MAX_LENGTH = 131_072
# Whole-word tokens: QwenImagePipeline's system template (its 34-token prefix is dropped by
# position, so it must be exactly 34 tokens), the default prompt, and common prompt words.
_QWEN_WORD_TEXT = (
    "system user assistant Describe the image by detailing color shape size texture quantity text "
    "spatial relationships of objects and background "
    "ghibli style a fantasy landscape with castles castle "
    "an in on at to for from is are it its this that as or into over under near between "
    "photo photograph portrait painting drawing illustration sketch render art digital oil "
    "cat dog man woman girl boy child people person bird fish horse dragon robot astronaut "
    "city town street house village forest jungle mountain mountains river lake sea ocean beach "
    "sky sun moon stars space night day sunset sunrise cloud clouds rain snow fog light lighting "
    "tree trees flower flowers garden field grass water fire ice stone wood "
    "red blue green yellow white black gold golden silver purple orange pink brown gray "
    "high quality detailed highly beautiful cinematic realistic photorealistic epic dramatic "
    "soft warm cold bright dark muted vibrant colorful colors palette composition scene view "
    "close up wide angle shot foreground old young small large big tall little "
    "ultra hd low bad worst blurry static distorted ugly deformed"
)
_QWEN_WORDS: tuple[str, ...] = tuple(_QWEN_WORD_TEXT.split())


@functools.lru_cache(maxsize=1)
def _qwen2_merges() -> tuple[tuple[str, str], ...]:
    """BPE merges that make every known word (alone, and after a space) a single token.

    Learnt by BPE training on those words, with Qwen2's own pre-tokenizer: merges applied in
    training order reproduce the training segmentation, so a known word never ends up half
    merged. Real merges rather than a lookup table, so a saved tokenizer loads back the same.
    """
    trainer = BpeTrainer(
        vocab_size=QWEN2_REGULAR_TOKENS,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    learner = Tokenizer(BPE())
    learner.pre_tokenizer = Qwen2Tokenizer(vocab={EOS_TOKEN: 0}, merges=[]).backend_tokenizer.pre_tokenizer
    learner.train_from_iterator([f"{f} {f}" for word in _QWEN_WORDS for f in (word, word.capitalize())], trainer)
    model = json.loads(learner.to_str())["model"]
    return tuple((a, b) for a, b in model["merges"])


@functools.lru_cache(maxsize=1)
def qwen2_vocab() -> dict[str, int]:
    """The regular part of the vocabulary (151,643 entries; the specials are added tokens):
    the byte alphabet in GPT-2 order at 0-255, the merged tokens, unreachable fillers."""
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    for a, b in _qwen2_merges():
        vocab.setdefault(a + b, len(vocab))
    while len(vocab) < QWEN2_REGULAR_TOKENS:
        vocab[f"<|filler{len(vocab)}|>"] = len(vocab)
    return vocab


@functools.lru_cache(maxsize=1)
def qwen2_tokenizer() -> Qwen2Tokenizer:
    """Qwen2.5-VL's tokenizer layout (Qwen-Image's tokenizer), built without files.

    Cached and shared like the T5 ones (pipelines only read it).
    """
    # Pairs, as the tokenizers BPE model takes them (transformers' hint says strings, which fail).
    merges: Any = list(_qwen2_merges())
    tok = Qwen2Tokenizer(
        vocab=dict(qwen2_vocab()),
        merges=merges,
        model_max_length=QWEN2_MODEL_MAX_LENGTH,
    )
    tok.add_special_tokens({"additional_special_tokens": list(QWEN2_SPECIAL_TOKENS[1:])})
    return tok
