"""Unified Compute Resource Identifiers (CONTRACT §1): pure functions, no database.

    ucri   = prefix "/" body "-" check
    prefix = "86" 1*8("." segment)     segment = 1*8(DIGIT / UPALPHA)
    body   = 12 Crockford base32       check   = ISO 7064 MOD 37,36 (hybrid) character

Parsing is forgiving (case, whitespace, extra hyphens in the body, a missing hyphen before the check,
Crockford aliases I/L->1 and O->0 in the body only); output is always the canonical form.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

ROOT = "86"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ISO7064_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BODY_LENGTH = 12
MAX_SEGMENTS = 8

_SEGMENT = r"[0-9A-Z]{1,8}"
# Matched with fullmatch: ``$`` would also accept a trailing newline.
_PREFIX_RE = re.compile(rf"86(?:\.{_SEGMENT}){{1,{MAX_SEGMENTS}}}")
_SEGMENT_RE = re.compile(_SEGMENT)
_REST_RE = re.compile(r"[0-9A-Z-]+")
_BODY_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
_CROCKFORD_SET = frozenset(CROCKFORD)
_VALUES = {ch: i for i, ch in enumerate(ISO7064_ALPHABET)}


class UCRIError(ValueError):
    """``code`` is ``ucri_malformed`` or ``ucri_checksum`` (CONTRACT §1)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class UCRI:
    prefix: str
    body: str
    check: str

    def __str__(self) -> str:
        return f"{self.prefix}/{self.body}-{self.check}"


# ISO 7064 MOD 37,36 -------------------------------------------------------------------------------

def _mod_37_36_state(chars: str) -> int:
    modulus = 36
    product = modulus
    for ch in chars:
        total = (product + _VALUES[ch]) % modulus
        product = ((total or modulus) * 2) % (modulus + 1)
    return product


def check_character(payload: str) -> str:
    """The MOD 37,36 check character for ``payload`` (characters 0-9A-Z only)."""
    product = _mod_37_36_state(payload)
    return ISO7064_ALPHABET[(37 - product) % 36]


def check_is_valid(payload_with_check: str) -> bool:
    """True when the last character is the MOD 37,36 check character of the rest."""
    if len(payload_with_check) < 2:
        return False
    product = _mod_37_36_state(payload_with_check[:-1])
    return (product + _VALUES[payload_with_check[-1]]) % 36 == 1


def _checked_chars(prefix: str, body: str) -> str:
    return prefix.replace(".", "") + body


# Prefixes ------------------------------------------------------------------------------------------

def is_prefix(text: str) -> bool:
    return bool(_PREFIX_RE.fullmatch(text))


def normalize_prefix(text: str) -> str:
    """Uppercase and validate a prefix such as ``86.52.gz01``; raises ``UCRIError``."""
    candidate = text.strip().upper()
    if not is_prefix(candidate):
        raise UCRIError("ucri_malformed", f"{text!r} is not a UCRI prefix (86 followed by .SEGMENT parts)")
    return candidate


def is_segment(text: str) -> bool:
    return bool(_SEGMENT_RE.fullmatch(text))


def child_prefix(parent: str, code: str) -> str:
    """The prefix delegated under ``parent`` for ``code`` (e.g. ``86.52`` + ``GZ01``)."""
    prefix = f"{parent}.{code.strip().upper()}"
    if not is_prefix(prefix):
        raise UCRIError("ucri_malformed", f"{code!r} is not a valid code under {parent}")
    return prefix


def prefix_within(prefix: str, ancestor: str) -> bool:
    """True when ``prefix`` equals ``ancestor`` or lies under it (segment-wise, not string-wise)."""
    return prefix == ancestor or prefix.startswith(ancestor + ".")


# UCRIs ---------------------------------------------------------------------------------------------

def parse(text: str) -> UCRI:
    """Parse any accepted spelling into its canonical parts; raises ``UCRIError``."""
    if not isinstance(text, str):
        raise UCRIError("ucri_malformed", "a UCRI must be a string")
    candidate = text.strip().upper()
    prefix, slash, rest = candidate.partition("/")
    if not slash or not is_prefix(prefix):
        raise UCRIError("ucri_malformed", f"{text!r} does not start with a UCRI prefix and '/'")
    if not _REST_RE.fullmatch(rest) or rest.endswith("-"):
        raise UCRIError("ucri_malformed", f"{text!r} has characters outside the UCRI alphabet")
    compact = rest.replace("-", "")
    if len(compact) != BODY_LENGTH + 1:
        raise UCRIError("ucri_malformed",
                        f"{text!r}: the body must be {BODY_LENGTH} characters followed by a check character")
    body = compact[:BODY_LENGTH].translate(_BODY_ALIASES)
    check = compact[BODY_LENGTH]
    if not set(body) <= _CROCKFORD_SET:
        raise UCRIError("ucri_malformed", f"{text!r}: the body is not Crockford base32")
    if not check_is_valid(_checked_chars(prefix, body) + check):
        raise UCRIError("ucri_checksum", f"{text!r}: the check character does not match (a typo?)")
    return UCRI(prefix=prefix, body=body, check=check)


def canonicalize(text: str) -> str:
    return str(parse(text))


def is_valid(text: str) -> bool:
    try:
        parse(text)
    except UCRIError:
        return False
    return True


def compose(prefix: str, body: str) -> str:
    """Build the canonical UCRI for a known-good prefix and body, computing the check character."""
    if not is_prefix(prefix) or len(body) != BODY_LENGTH or not set(body) <= _CROCKFORD_SET:
        raise UCRIError("ucri_malformed", f"cannot compose a UCRI from {prefix!r} and {body!r}")
    return f"{prefix}/{body}-{check_character(_checked_chars(prefix, body))}"


def random_body(randbits=secrets.randbits) -> str:
    """Twelve random Crockford characters (60 bits)."""
    value = randbits(5 * BODY_LENGTH)
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(BODY_LENGTH)))


def mint(prefix: str, randbits=secrets.randbits) -> str:
    """A new random UCRI under ``prefix``. Uniqueness is enforced by the caller's database."""
    return compose(prefix, random_body(randbits))


def prefix_of(ucri: str) -> str:
    return ucri.partition("/")[0]
