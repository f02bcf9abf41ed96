"""Bytes of a text file to str, in whatever common encoding it was saved in.

Order: a BOM, strict UTF-8, then charset-normalizer checked against GB18030. The check exists
because on short texts the detector takes GBK for Big5 or CP949 nearly every time ("你好" comes
out as "斕疑"); GBK is by far the most common legacy encoding of this stack's users.
"""

from __future__ import annotations

import codecs
import unicodedata
from functools import lru_cache

from server.knowledge_base.loaders.base import LoaderError

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ALLOWED_CONTROLS = set("\t\n\r\f\v")
# Share of control/replacement characters above which decoded text is treated as binary.
_MAX_GARBAGE_SHARE = 0.05
_SAMPLE_CHARS = 20_000
_SAMPLE_NON_ASCII = 2_000

# Language a detected East Asian encoding stands for; other guesses are trusted as they are.
_GB_ENCODINGS = {"gb2312", "gbk", "gb18030", "hz"}
_CHINESE_ENCODINGS = {"big5", "big5hkscs", "cp950"} | _GB_ENCODINGS
_KOREAN_ENCODINGS = {"cp949", "euc_kr", "johab", "iso2022_kr"}
_JAPANESE_ENCODINGS = {"cp932", "shift_jis", "shift_jis_2004", "shift_jisx0213", "euc_jp", "euc_jis_2004"}
_JAPANESE_ENCODINGS |= {"euc_jisx0213", "iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext"}


def decode_text(raw: bytes, ext: str = ".txt") -> str:
    """Decode a text file's bytes; LoaderError when they are binary data rather than text."""
    text = _decode_with_bom(raw)
    if text is None:
        if b"\x00" in raw:
            text = _decode_bomless_utf16(raw)
            if text is None:
                raise LoaderError(f"binary content in a {ext} file (NUL bytes found)")
        else:
            text = _decode_utf8(raw) or _decode_legacy(raw)
    if text is None or _looks_binary(text):
        raise LoaderError(f"binary content in a {ext} file (mostly non-printable characters)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_with_bom(raw: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom) :].decode(encoding, errors="replace")
    return None


def _decode_bomless_utf16(raw: bytes) -> str | None:
    """UTF-16 without a BOM: ASCII-heavy text then has a zero in every other byte."""
    even_zeros, odd_zeros = raw[0::2].count(0), raw[1::2].count(0)
    half = len(raw) / 2
    if odd_zeros > 0.4 * half and even_zeros < 0.05 * half:
        encoding = "utf-16-le"
    elif even_zeros > 0.4 * half and odd_zeros < 0.05 * half:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def _decode_utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_legacy(raw: bytes) -> str | None:
    """The most plausible reading among the detector's East Asian guesses and GB18030."""
    matches = _detect(raw)
    try:
        gb_text: str | None = raw.decode("gb18030")
    except UnicodeDecodeError:
        gb_text = None
    if not matches or _language_of(matches[0][0]) is None:
        # No guess, or a Latin/Cyrillic/Greek one: the detector is reliable there.
        return matches[0][1] if matches else gb_text
    gb_rank = next((i for i, (enc, _) in enumerate(matches) if enc in _GB_ENCODINGS), len(matches))
    # (score, wins a tie, text). GB18030 comes first, so it wins ties with Big5 readings; a Korean or
    # Japanese reading the detector ranked above GB18030 wins a tie with it.
    candidates = [(_plausibility(gb_text, "zh"), False, gb_text)] if gb_text is not None else []
    for rank, (encoding, text) in enumerate(matches):
        language = _language_of(encoding)
        if language is not None:
            candidates.append((_plausibility(text, language), language != "zh" and rank < gb_rank, text))
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _detect(raw: bytes) -> list[tuple[str, str]]:
    """charset-normalizer's guesses, best first, leaving out UTF-16/32 (handled above, wrong on short texts)."""
    from charset_normalizer import from_bytes

    return [(m.encoding, str(m)) for m in from_bytes(raw) if not m.encoding.startswith(("utf_16", "utf_32"))]


def _language_of(encoding: str | None) -> str | None:
    if encoding in _CHINESE_ENCODINGS:
        return "zh"
    if encoding in _KOREAN_ENCODINGS:
        return "ko"
    if encoding in _JAPANESE_ENCODINGS:
        return "ja"
    return None


def _plausibility(text: str, language: str) -> float:
    """Share of the non-ASCII characters that are everyday characters of the language."""
    sample = [ch for ch in text[:_SAMPLE_CHARS] if ord(ch) > 0x7F][:_SAMPLE_NON_ASCII]
    if not sample:
        return 0.0
    return sum(1 for ch in sample if _is_everyday(ch, language)) / len(sample)


def _is_everyday(ch: str, language: str) -> bool:
    if "\u3000" <= ch <= "\u303f" or "\uff01" <= ch <= "\uff5e":
        return True  # CJK punctuation and full-width ASCII
    if language == "ko":
        # The 2350 Hangul syllables of KS X 1001; mixed-in Hanja is rare in modern Korean.
        return "\uac00" <= ch <= "\ud7a3" and _lead_byte_in(ch, "euc_kr", 0xB0, 0xC8)
    if language == "ja":
        # Hiragana, full-width Katakana, and JIS level-1 Kanji (Shift_JIS lead bytes 0x88-0x98).
        return "\u3040" <= ch <= "\u30ff" or _lead_byte_in(ch, "shift_jis", 0x88, 0x98)
    return _is_common_hanzi(ch)


@lru_cache(maxsize=8192)
def _is_common_hanzi(ch: str) -> bool:
    """In GB2312 level 1 (3755 common simplified) or Big5 level 1 (5401 common traditional characters).

    Both tables keep their common level in a fixed lead-byte range, so encoding the character tells.
    """
    return _lead_byte_in(ch, "gb2312", 0xB0, 0xD7) or _lead_byte_in(ch, "big5", 0xA4, 0xC6)


def _lead_byte_in(ch: str, encoding: str, low: int, high: int) -> bool:
    try:
        encoded = ch.encode(encoding)
    except UnicodeEncodeError:
        return False
    return len(encoded) == 2 and low <= encoded[0] <= high


def _looks_binary(text: str) -> bool:
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return False
    garbage = sum(1 for ch in sample if _is_garbage(ch))
    return garbage / len(sample) > _MAX_GARBAGE_SHARE


def _is_garbage(ch: str) -> bool:
    if ch == "\ufffd":
        return True
    return unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS
