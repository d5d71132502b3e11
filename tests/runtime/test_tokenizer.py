"""The torch-free tokenizer gives exactly open_clip's token ids."""

import random

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from vidsearch.runtime.tokenizer import ClipTokenizer, build_clip_tokenizer

WORDS = ["a", "red", "circle", "moves", "to", "the", "left", "Blue", "SQUARE", "slides", "upwards", "it's", "WE'LL",
         "they'd", "I'M", "don't", "rock'n'roll", "e-mail", "C++", "3.14159", "2026", "x", "naïve", "café", "Straße",
         "ΟΔΟΣ", "Σίσυφος", "ПРИВЕТ", "мир", "東京", "日本語のテキスト", "한국어", "العربية", "हिन्दी", "ภาษาไทย", "עברית",
         "١٢٣", "½", "²", "①", "Ⅻ", "ﬁ", "İstanbul", "ǅ", "e\u0301", "o\u0308\u0304", "cafÃ©", "â€œquotedâ€\x9d"]
EMOJI = ["😀", "🚀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🏳️‍🌈", "🙂\ufe0f", "🤖", "✨", "🦄"]
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x1F600;", "&amp;amp;", "&amp;lt;b&amp;gt;", "&nbsp;",
            "&eacute;", "&foo;", "&", "&#0;", "<b>bold</b>", "&#128512"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
          "\u2003", "\u200a", "\u2028", "\u2029", "\u202f", "\u3000", "\u200b", "\ufeff", "\x00", "\x07"]
PUNCTUATION = ["!", "?!", "...", "—", "–", "«»", "“”", "''", "'", "'s", "'S", "(", ")", "[]", "{}", "/", "\\", "_",
               "~~~", "@#$%", "<", ">", "<<", "</w>", "|", "¿", "¡", "•"]
SPECIAL = ["<start_of_text>", "<end_of_text>", "<END_OF_TEXT>", "!<end_of_text>", "a<start_of_text>b",
           "'<end_of_text>", "<<start_of_text>", "<end_of_text>>"]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF), (0x1F300, 0x1F5FF), (0x2000, 0x206F)]
POOLS = [WORDS, WORDS, WORDS, EMOJI, ENTITIES, SPACES, SPACES, PUNCTUATION, SPECIAL]


def varied_texts(count: int, seed: int = 0) -> list[str]:
    """Deterministic mixtures of words of many scripts, emoji, HTML entities, odd whitespace, punctuation, spelled
    special tokens and random code points; every tenth one far over the context length."""
    rng = random.Random(seed)
    texts = []
    for number in range(count):
        pieces = rng.randint(120, 250) if number % 10 == 0 else rng.randint(0, 12)
        parts = []
        for _ in range(pieces):
            if rng.random() < 0.1:
                low, high = rng.choice(RANGES)
                parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 4))))
            else:
                parts.append(rng.choice(rng.choice(POOLS)))
            parts.append(rng.choice(["", " ", " ", " ", rng.choice(SPACES)]))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def bpe_path() -> str:
    return default_bpe()


@pytest.mark.parametrize("context_length", [77, 24])
def test_token_ids_equal_open_clip_on_varied_strings(tmp_path, bpe_path, context_length):
    texts = varied_texts(1200 if context_length == 77 else 300, seed=context_length)
    build_clip_tokenizer(bpe_path, context_length).save(str(tmp_path / "tokenizer.json"))
    ours = ClipTokenizer.from_file(tmp_path / "tokenizer.json")(texts)
    theirs = SimpleTokenizer(bpe_path, context_length=context_length)(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == theirs.shape == (len(texts), context_length)
    differing = [i for i in range(len(texts)) if not np.array_equal(ours[i], theirs[i])]
    assert not differing, [(texts[i], ours[i].tolist(), theirs[i].tolist()) for i in differing[:3]]
    truncated = sum(int(row[-1] == 49407) for row in theirs)
    assert truncated >= len(texts) // 10, "the generator must produce over-long texts"


def test_spelled_special_tokens_follow_open_clip(bpe_path):
    texts = ["<start_of_text>", "a <end_of_text> b", "!<end_of_text>", "<<start_of_text>", "'<end_of_text>x"]
    ours = ClipTokenizer(build_clip_tokenizer(bpe_path, 16))(texts)
    assert ours.tolist() == SimpleTokenizer(bpe_path, context_length=16)(texts).tolist()


def test_a_tokenizer_without_truncation_is_refused(bpe_path):
    tokenizer = build_clip_tokenizer(bpe_path, 77)
    tokenizer.no_truncation()
    with pytest.raises(ValueError, match="not a CLIP tokenizer"):
        ClipTokenizer(tokenizer)
