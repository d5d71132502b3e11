"""CLIP's byte-pair tokenizer without torch or open_clip: a Hugging Face `tokenizers` Tokenizer fed open_clip's BPE
vocabulary, giving exactly `open_clip.tokenizer.SimpleTokenizer`'s token ids (a test checks thousands of strings).

open_clip cleans a text (ftfy, HTML entities unescaped twice, whitespace runs collapsed, lower case), splits it into
words with one regular expression, maps each word's UTF-8 bytes to printable characters and applies the BPE merges,
the last symbol of a word carrying `</w>`. The cleaning stays in Python here, with the same functions (`str.lower`
and `str.split` differ from the Rust normalisers on final sigma and on some control characters); `tokenizer.json`
does the rest: the same word pattern, byte-level mapping, BPE, start/end tokens, truncation and padding.
"""

from __future__ import annotations

import gzip
import html
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

SOT, EOT = "<start_of_text>", "<end_of_text>"
SPECIALS = (SOT, EOT)
# open_clip's word pattern; its `\s` is spelled ' ', the only whitespace a cleaned text still holds.
WORD_PATTERN = SOT + "|" + EOT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^ \p{L}\p{N}]+"""
MERGES = 49152 - 256 - 2  # open_clip keeps this many merges of the vocabulary file


def clean(text: str) -> str:
    """open_clip's default ("lower") cleaning."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (as open_clip and `tokenizers` ByteLevel use it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def build_clip_tokenizer(bpe_path: str | Path, context_length: int) -> Tokenizer:
    """The `tokenizers` Tokenizer equal to open_clip's SimpleTokenizer(bpe_path, context_length)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIALS)
    ids = {token: number for number, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, ids[SOT]), (EOT, ids[EOT])])
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.enable_padding(length=context_length, pad_id=0, pad_token=vocab[0])
    return tokenizer


class ClipTokenizer:
    """texts → int64 token ids [N, context_length], as open_clip's SimpleTokenizer gives them."""

    def __init__(self, tokenizer: Tokenizer):
        truncation = tokenizer.truncation
        if truncation is None or tokenizer.token_to_id(EOT) is None:
            raise ValueError("not a CLIP tokenizer: no truncation length or no end-of-text token")
        self.tokenizer = tokenizer
        self.context_length = int(truncation["max_length"])
        self.sot, self.eot = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)

    @classmethod
    def from_file(cls, path: str | Path) -> ClipTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def __call__(self, texts: list[str]) -> np.ndarray:
        cleaned = [clean(text) for text in texts]
        rows = np.zeros((len(cleaned), self.context_length), dtype=np.int64)
        spelled = [any(special in text for special in SPECIALS) for text in cleaned]
        plain = [row for row, special in enumerate(spelled) if not special]
        for row, encoding in zip(plain, self.tokenizer.encode_batch([cleaned[row] for row in plain])):
            rows[row] = encoding.ids
        for row in (row for row, special in enumerate(spelled) if special):
            ids = self._with_specials(cleaned[row])
            rows[row, :len(ids)] = ids
        return rows

    def _with_specials(self, text: str) -> list[int]:
        """A text that spells a special token: open_clip maps that word to the token itself (when its pattern
        matches it as a word), which BPE cannot; encode word by word."""
        ids = [self.sot]
        for word, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(text):
            special = self.tokenizer.token_to_id(word) if word in SPECIALS else None
            ids += [special] if special is not None else [t.id for t in self.tokenizer.model.tokenize(word)]
        return ids[:self.context_length - 1] + [self.eot]
