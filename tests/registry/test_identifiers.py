"""UCRI grammar, check character and forgiving parsing (CONTRACT §1). Pure: no database."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.iso7064 import mod_37_36

from registry import identifiers
from registry.identifiers import CROCKFORD, ISO7064_ALPHABET, UCRIError

CONTRACT_VALID = ["86.11.A7K2/7ZK3M9Q2AB4C-L", "86.52.GZ01/000000000001-N", "86.M01.X9/Z8Y7X6W5V4T3-S"]


@pytest.mark.parametrize("ucri", CONTRACT_VALID)
def test_contract_examples_are_valid_and_canonical(ucri):
    assert identifiers.canonicalize(ucri) == ucri
    assert identifiers.is_valid(ucri)


@pytest.mark.parametrize(
    "spelling",
    [
        "86.11.a7k2/7zk3-m9q2-ab4c-l",  # the contract's forgiving example
        "  86.11.A7K2/7ZK3M9Q2AB4C-L\t",  # surrounding whitespace
        "86.11.A7K2/7ZK3M9Q2AB4CL",  # missing hyphen before the check character
        "86.11.A7K2/7ZK3-M9Q2-AB4C-L",  # extra hyphens in the body
        "86.11.A7K2/-7ZK3M9Q2AB4C-L",
    ],
)
def test_forgiving_spellings_canonicalise(spelling):
    assert identifiers.canonicalize(spelling) == "86.11.A7K2/7ZK3M9Q2AB4C-L"


def test_crockford_aliases_are_mapped_in_the_body_only():
    canonical = identifiers.compose("86.11.A7K2", "0110ABCD0001")
    assert identifiers.canonicalize(canonical.replace("/0110", "/OIL0")) == canonical
    assert identifiers.canonicalize(canonical.replace("/0110", "/oil0")) == canonical
    # Aliases are not applied to the prefix: "86.1I" is another (valid) prefix, so this is a checksum miss.
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse(canonical.replace("86.11.", "86.1I."))
    assert excinfo.value.code == "ucri_checksum"


@pytest.mark.parametrize("check", ["I", "L", "O", "U"])
def test_check_character_may_be_any_of_iloU_and_is_never_aliased(check):
    prefix = "86.11.A7K2"
    body = next(b for b in (identifiers.random_body(random.Random(i).getrandbits) for i in range(10_000))
                if identifiers.check_character(prefix.replace(".", "") + b) == check)
    ucri = f"{prefix}/{body}-{check}"
    assert identifiers.canonicalize(ucri.lower()) == ucri
    # Replacing the check by its "alias" value is a checksum error, not silently accepted.
    alias = {"I": "1", "L": "1", "O": "0", "U": "V"}[check]
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse(f"{prefix}/{body}-{alias}")
    assert excinfo.value.code == "ucri_checksum"


def test_one_character_typo_is_a_checksum_error():
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse("86.11.A7K2/7ZK3M9Q2AB4C-M")
    assert excinfo.value.code == "ucri_checksum"


@pytest.mark.parametrize(
    "garbage",
    [
        "", " ", "hello", "86", "86/7ZK3M9Q2AB4C-L", "87.11.A7K2/7ZK3M9Q2AB4C-L", "86.11.A7K2",
        "86.11.A7K2/", "86.11.A7K2/7ZK3M9Q2AB4C", "86.11.A7K2/7ZK3M9Q2AB4C-LL", "86.11.A7K2/7ZK3M9Q2AB4U-L",
        "86.11.A7K2/7ZK3M9Q2AB4C-L-", "86..11/7ZK3M9Q2AB4C-L", "86.11.ABCDEFGHI/7ZK3M9Q2AB4C-L",
        "86.1.2.3.4.5.6.7.8.9/7ZK3M9Q2AB4C-L", "86.11.A7K2/7ZK3M9Q2AB4C-*", "86.11.A-K2/7ZK3M9Q2AB4C-L",
        "86.11.A7K2/7ZK3 M9Q2AB4C-L", "86.11.A7K2//7ZK3M9Q2AB4C-L", "８６.11.A7K2/7ZK3M9Q2AB4C-L",
    ],
)
def test_garbage_is_malformed(garbage):
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse(garbage)
    assert excinfo.value.code == "ucri_malformed"


def test_non_string_is_malformed():
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse(None)  # type: ignore[arg-type]
    assert excinfo.value.code == "ucri_malformed"


def test_prefix_rules():
    assert identifiers.normalize_prefix(" 86.52.gz01 ") == "86.52.GZ01"
    assert identifiers.child_prefix("86.52", "gz01") == "86.52.GZ01"
    assert identifiers.prefix_within("86.52.GZ01", "86.52")
    assert identifiers.prefix_within("86.52", "86.52")
    assert not identifiers.prefix_within("86.521", "86.52")
    for bad in ("86", "86.", "52", "86.52.", "86.TOOLONGXX"):
        with pytest.raises(UCRIError):
            identifiers.normalize_prefix(bad)


# Independent check against python-stdnum's ISO 7064 MOD 37,36 -----------------------------------

prefixes = st.lists(st.text(alphabet=ISO7064_ALPHABET, min_size=1, max_size=8), min_size=1, max_size=8).map(
    lambda segments: "86." + ".".join(segments))
bodies = st.text(alphabet=CROCKFORD, min_size=12, max_size=12)


@given(prefix=prefixes, body=bodies)
def test_check_character_agrees_with_stdnum(prefix, body):
    payload = prefix.replace(".", "") + body
    assert identifiers.check_character(payload) == mod_37_36.calc_check_digit(payload)
    ucri = identifiers.compose(prefix, body)
    assert mod_37_36.is_valid(ucri.replace(".", "").replace("/", "").replace("-", ""))


@given(prefix=prefixes, seed=st.integers(min_value=0, max_value=2**32))
def test_every_minted_ucri_parses_back_to_itself(prefix, seed):
    ucri = identifiers.mint(prefix, random.Random(seed).getrandbits)
    assert identifiers.canonicalize(ucri) == ucri
    assert identifiers.canonicalize(ucri.lower()) == ucri
    assert identifiers.prefix_of(ucri) == prefix


def _checked_positions(ucri: str) -> list[int]:
    return [i for i, ch in enumerate(ucri) if ch not in "./-"]


@settings(max_examples=200)
@given(prefix=prefixes, seed=st.integers(min_value=0, max_value=2**32), data=st.data())
def test_every_single_substitution_is_caught(prefix, seed, data):
    ucri = identifiers.mint(prefix, random.Random(seed).getrandbits)
    position = data.draw(st.sampled_from(_checked_positions(ucri)))
    replacement = data.draw(st.sampled_from([c for c in ISO7064_ALPHABET if c != ucri[position]]))
    typo = ucri[:position] + replacement + ucri[position + 1:]
    body_start = ucri.index("/") + 1
    if body_start <= position < body_start + 12 and replacement in "ILO" and \
            {"I": "1", "L": "1", "O": "0"}[replacement] == ucri[position]:
        # An alias of the same body character (e.g. 0 -> O) is the same identifier, not a typo.
        assert identifiers.canonicalize(typo) == ucri
        return
    with pytest.raises(UCRIError) as excinfo:
        identifiers.parse(typo)
    assert excinfo.value.code in {"ucri_checksum", "ucri_malformed"}


def test_exhaustive_substitutions_on_contract_examples():
    for ucri in CONTRACT_VALID:
        for position in _checked_positions(ucri):
            for replacement in ISO7064_ALPHABET:
                if replacement == ucri[position]:
                    continue
                typo = ucri[:position] + replacement + ucri[position + 1:]
                try:
                    parsed = identifiers.canonicalize(typo)
                except UCRIError:
                    continue
                # Only a Crockford alias of the same body character may still parse, to the same UCRI.
                assert parsed == ucri, typo


def test_adjacent_transposition_catch_rate(record_property):
    """ISO 7064 MOD 37,36 catches nearly all adjacent transpositions; measure and report the rate."""
    rng = random.Random(7)
    caught = total = 0
    for _ in range(4000):
        prefix = "86." + ".".join("".join(rng.choice(ISO7064_ALPHABET) for _ in range(rng.randint(1, 4)))
                                  for _ in range(rng.randint(1, 3)))
        ucri = identifiers.mint(prefix, rng.getrandbits)
        positions = _checked_positions(ucri)
        for a, b in itertools.pairwise(positions):
            if ucri[a] == ucri[b]:
                continue
            swapped = list(ucri)
            swapped[a], swapped[b] = swapped[b], swapped[a]
            total += 1
            caught += not identifiers.is_valid("".join(swapped))
    rate = caught / total
    record_property("adjacent_transposition_catch_rate", rate)
    print(f"\nadjacent transpositions caught: {caught}/{total} = {rate:.4%}")
    assert rate > 0.97
