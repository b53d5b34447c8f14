""""Did you mean": the existing UCRIs one typo away from an identifier whose check character fails.

ISO 7064 MOD 37,36 catches every single substitution and nearly every adjacent transposition
(CONTRACT §1), so the identifier a person meant is almost always among the strings one such edit away
whose check character validates. We generate those, keep the valid ones (about one in 36), and ask the
database once which of them exist: never suggesting an identifier nobody registered.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import identifiers
from .models import Resource

# Prefix segments are DIGIT / UPALPHA; the body is Crockford base32; the check character is any of
# the 36 (CONTRACT §1).
_SEGMENT_ALPHABET = identifiers.ISO7064_ALPHABET
_BODY_ALPHABET = identifiers.CROCKFORD
_CHECK_ALPHABET = identifiers.ISO7064_ALPHABET
# The body's Crockford aliases, as identifiers.parse maps them (body only, never prefix or check).
_BODY_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
MAX_SUGGESTIONS = 10


@dataclass(frozen=True)
class Suggestion:
    ucri: str
    name: str
    status: str


@dataclass(frozen=True)
class _Parts:
    segments: list[str]  # the prefix's segments after the root "86"
    body: str
    check: str

    def compose(self) -> str:
        return f"{'.'.join([identifiers.ROOT, *self.segments])}/{self.body}-{self.check}"


def _parts(text: str) -> _Parts | None:
    """Split a spelling that passes the grammar (only its check character fails) into canonical parts."""
    candidate = text.strip().upper()
    prefix, slash, rest = candidate.partition("/")
    compact = rest.replace("-", "")
    if not slash or not identifiers.is_prefix(prefix) or len(compact) != identifiers.BODY_LENGTH + 1:
        return None
    body = compact[:identifiers.BODY_LENGTH].translate(_BODY_ALIASES)
    check = compact[identifiers.BODY_LENGTH]
    if not set(body) <= set(_BODY_ALPHABET) or check not in _CHECK_ALPHABET:
        return None
    return _Parts(prefix.split(".")[1:], body, check)


def _replace(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1:]


def _swap(text: str, index: int) -> str:
    return text[:index] + text[index + 1] + text[index] + text[index + 2:]


def _with(segments: list[str], index: int, segment: str) -> list[str]:
    return [*segments[:index], segment, *segments[index + 1:]]


def candidates(text: str) -> set[str]:
    """Every canonical UCRI one substitution or one adjacent transposition away from ``text`` whose
    check character validates. Edits touch the prefix's segments (not the fixed root), the body and
    the check character; a transposition may cross the optional hyphen between body and check."""
    parts = _parts(text)
    if parts is None:
        return set()
    edits: list[_Parts] = []
    for s, segment in enumerate(parts.segments):
        for i in range(len(segment)):
            edits += [_Parts(_with(parts.segments, s, _replace(segment, i, c)), parts.body, parts.check)
                      for c in _SEGMENT_ALPHABET if c != segment[i]]
            if i + 1 < len(segment) and segment[i] != segment[i + 1]:
                edits.append(_Parts(_with(parts.segments, s, _swap(segment, i)), parts.body, parts.check))
    for i in range(len(parts.body)):
        edits += [_Parts(parts.segments, _replace(parts.body, i, c), parts.check)
                  for c in _BODY_ALPHABET if c != parts.body[i]]
        if i + 1 < len(parts.body) and parts.body[i] != parts.body[i + 1]:
            edits.append(_Parts(parts.segments, _swap(parts.body, i), parts.check))
    edits += [_Parts(parts.segments, parts.body, c) for c in _CHECK_ALPHABET if c != parts.check]
    last = parts.body[-1]
    if last != parts.check and parts.check in _BODY_ALPHABET:
        edits.append(_Parts(parts.segments, parts.body[:-1] + parts.check, last))
    original = parts.compose()
    valid = set()
    for edit in edits:
        ucri = edit.compose()
        # Edits keep every length, so the grammar still holds; is_valid settles the check character.
        if ucri != original and identifiers.is_valid(ucri):
            valid.add(ucri)
    return valid


def did_you_mean(text: str, *, limit: int = MAX_SUGGESTIONS) -> list[Suggestion]:
    """The existing resources (local or mirrored, retired included: their UCRIs still resolve, to a
    tombstone) whose UCRI is one typo away from ``text``. One query, on the unique ``ucri`` index."""
    valid = candidates(text)
    if not valid:
        return []
    rows = (Resource.objects.filter(ucri__in=valid).order_by("ucri")
            .values_list("ucri", "name", "status")[:limit])
    return [Suggestion(ucri, name, status) for ucri, name, status in rows]
