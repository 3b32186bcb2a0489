"""Finding the verification code in an SMS text. Pure functions, no I/O. Imports nothing of ours.

The default pattern takes 4 to 8 digits (or ``123-456``) standing on their own: not part of a longer
run of digits, a phone number (``1-800-555-0199``), a date (``12/05/2024``), a time or an amount
(``1,234.50``), nor glued to letters or ``#`` (``ID12345``, ``#9876``). ``G-482913`` is fine: a letter before the dash.

When a text holds several candidates, the first one in a sentence that mentions a code ("code", "OTP",
"PIN", "password", "verification", …) wins; with no such sentence, the first candidate. A configured
pattern replaces the default; its first group (or the whole match) is the code, dashes and spaces removed.
"""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_PATTERN = (
    r"(?<![A-Za-z0-9#])(?<!\d[.,:/-])"  # not glued to letters, digits or #, not the tail of 1-800 or 12/05
    r"(\d{3}-\d{3}|\d{4,8})"
    r"(?![A-Za-z0-9])(?![.,:/-]\d)"  # nor the head of 2024-01, 1,234 or 10:30
)
_KEYWORDS = re.compile(
    r"code|otp|pin\b|passcode|password|verif|confirm|one[- ]time|kod|c[oó]digo|код",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?;]\s+|\n")


@lru_cache(maxsize=8)
def compile_pattern(pattern: str | None = None) -> re.Pattern[str]:
    """The configured pattern compiled once; raises ``ValueError`` for a bad one (at start-up)."""
    try:
        return re.compile(pattern or DEFAULT_PATTERN)
    except re.error as exc:
        raise ValueError(f"NOTIFY_SMS_CODE_PATTERN is not a valid regular expression: {exc}") from None


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        spans.append((start, end.start()))
        start = end.end()
    spans.append((start, len(text)))
    return spans


def extract_codes(text: str, pattern: str | None = None) -> list[str]:
    """Every candidate code in ``text``, the likeliest first; ``[]`` when there is none."""
    regex = compile_pattern(pattern)
    found: list[tuple[int, str]] = []
    for match in regex.finditer(text):
        raw = match.group(1) if regex.groups else match.group(0)
        code = re.sub(r"[-\s]", "", raw or "")
        if code:
            found.append((match.start(), code))
    if not found:
        return []
    keyed = [(a, b) for a, b in _sentences(text) if _KEYWORDS.search(text, a, b)]

    def mentioned(position: int) -> bool:
        return any(a <= position < b for a, b in keyed)

    ranked = [code for position, code in found if mentioned(position)]
    ranked += [code for position, code in found if not mentioned(position)]
    return list(dict.fromkeys(ranked))


def extract_code(text: str, pattern: str | None = None) -> str | None:
    """The code of ``text``, or None when it holds none."""
    codes = extract_codes(text, pattern)
    return codes[0] if codes else None
