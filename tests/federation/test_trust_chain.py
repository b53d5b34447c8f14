"""Trust chain validation, metadata policy and constraints (OpenID Federation §10.2, §6; CONTRACT §8). Pure.

The federation under test: a national anchor (owns 86), a provincial intermediate (86.52) and an
industry leaf below it (86.52.IND1).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from federation import trust
from federation.trust import TrustChainError
from identity import crypto, tokens

NOW = 1_800_000_000
NATIONAL, GZ, IND1 = "https://national.example", "https://gz.example", "https://ind1.example"
ES_TYP = "entity-statement+jwt"


@pytest.fixture(scope="module")
def keys() -> dict[str, crypto.PrivateKey]:
    return {name: crypto.generate_private_key() for name in ("national", "gz", "gy", "ind1", "rogue")}


def jwk(key) -> dict:
    return crypto.public_jwk(key)


@dataclass
class Link:
    """One statement of a chain, signed when the test asks for its token (so a test can mutate it first)."""

    claims: dict
    key: crypto.PrivateKey
    typ: str = ES_TYP

    def token(self) -> str:
        return crypto.sign(self.claims, self.key, typ=self.typ, kid=jwk(self.key)["kid"])


def statement(iss: str, sub: str, subject_key, **extra) -> dict:
    return {"iss": iss, "sub": sub, "iat": NOW - 60, "exp": NOW + 3600, "jwks": {"keys": [jwk(subject_key)]},
            **extra}


def prefix_policy(*prefixes: str) -> dict:
    return {"metadata_policy": {"compute_registry": {"ucri_prefixes": {"prefix_within": list(prefixes)}}},
            "metadata_policy_crit": ["prefix_within"]}


def registry_metadata(entity: str, prefixes: list[str]) -> dict:
    return {"federation_entity": {"federation_fetch_endpoint": f"{entity}/federation/fetch"},
            "compute_registry": {"api_base": f"{entity}/api/v1", "ucri_prefixes": prefixes}}


def anchor_ec(keys) -> Link:
    return Link(statement(NATIONAL, NATIONAL, keys["national"], metadata=registry_metadata(NATIONAL, ["86"])),
                keys["national"])


def national_about_gz(keys) -> Link:
    return Link(statement(NATIONAL, GZ, keys["gz"], **prefix_policy("86.52"), constraints={"max_path_length": 1}),
                keys["national"])


def three_level(keys) -> list[Link]:
    """[ind1 EC, gz about ind1, national about gz, national EC]."""
    leaf = Link(statement(IND1, IND1, keys["ind1"], authority_hints=[GZ],
                          metadata=registry_metadata(IND1, ["86.52.IND1"])), keys["ind1"])
    gz_about_leaf = Link(statement(GZ, IND1, keys["ind1"], **prefix_policy("86.52.IND1")), keys["gz"])
    return [leaf, gz_about_leaf, national_about_gz(keys), anchor_ec(keys)]


def two_level(keys) -> list[Link]:
    """[gz EC, national about gz, national EC]."""
    gz = Link(statement(GZ, GZ, keys["gz"], authority_hints=[NATIONAL], metadata=registry_metadata(GZ, ["86.52"])),
              keys["gz"])
    return [gz, national_about_gz(keys), anchor_ec(keys)]


def anchors(keys) -> dict:
    return {NATIONAL: [jwk(keys["national"])]}


def validate(links: list[Link], keys, **kwargs) -> trust.TrustChain:
    kwargs.setdefault("anchors", anchors(keys))
    return trust.validate_chain([link.token() for link in links], now=NOW, **kwargs)


def policy_of(link: Link) -> dict:
    return link.claims["metadata_policy"]["compute_registry"]


# Valid chains ---------------------------------------------------------------------------------------

def test_three_level_chain(keys):
    links = three_level(keys)
    links[2].claims["exp"] = NOW + 600
    chain = validate(links, keys)
    assert (chain.subject, chain.anchor) == (IND1, NATIONAL)
    assert [s["iss"] for s in chain.statements] == [IND1, GZ, NATIONAL, NATIONAL]
    assert chain.ucri_prefixes == ("86.52.IND1",)
    assert chain.metadata["compute_registry"]["api_base"] == f"{IND1}/api/v1"
    assert chain.policy == {"compute_registry": {"ucri_prefixes": {"prefix_within": ["86.52.IND1"]}}}
    assert chain.jwks_by_entity == {IND1: [jwk(keys["ind1"])], GZ: [jwk(keys["gz"])],
                                    NATIONAL: [jwk(keys["national"])]}
    assert chain.expires_at == NOW + 600
    assert trust.keys_for(chain, GZ) == [jwk(keys["gz"])]
    assert trust.keys_for(chain, "https://elsewhere.example") == []


def test_key_lookup_verifies_what_an_entity_in_the_chain_signs(keys):
    chain = validate(three_level(keys), keys)
    page = crypto.sign({"iss": GZ, "iat": NOW, "exp": NOW + 60}, keys["gz"], typ="change-page+jwt",
                       kid=jwk(keys["gz"])["kid"])
    assert tokens.verify(page, tokens.CHANGE_PAGE, keys=trust.key_lookup(chain, GZ), now=NOW).claims["iss"] == GZ
    with pytest.raises(tokens.TokenError):
        tokens.verify(page, tokens.CHANGE_PAGE, keys=trust.key_lookup(chain, IND1), now=NOW)


def test_two_level_chain(keys):
    chain = validate(two_level(keys), keys)
    assert (chain.subject, chain.anchor, chain.ucri_prefixes) == (GZ, NATIONAL, ("86.52",))
    assert chain.jwks_by_entity == {GZ: [jwk(keys["gz"])], NATIONAL: [jwk(keys["national"])]}


def test_anchor_only_chain(keys):
    chain = validate([anchor_ec(keys)], keys)
    assert (chain.subject, chain.anchor, chain.ucri_prefixes, chain.policy) == (NATIONAL, NATIONAL, ("86",), {})
    assert chain.jwks_by_entity == {NATIONAL: [jwk(keys["national"])]}


def test_standard_operators_are_merged_top_down_and_applied(keys):
    links = three_level(keys)
    policy_of(links[2]).update({
        "resource_types": {"default": ["cpu"], "subset_of": ["cpu", "gpu", "npu"]},
        "contacts": {"add": ["noc@national.example"]},
        "sync_mode": {"value": "pull"},
        "notify_endpoint": {"essential": True},
    })
    policy_of(links[1]).update({"resource_types": {"subset_of": ["gpu", "cpu"]},
                                "contacts": {"add": ["ops@gz.example"]}})
    links[0].claims["metadata"]["compute_registry"].update(
        {"resource_types": ["gpu", "fpga"], "contacts": ["admin@ind1.example"], "sync_mode": "push"})
    # The superior's own metadata about its subordinate overrides the subordinate's, before policy.
    links[1].claims["metadata"] = {"compute_registry": {"notify_endpoint": f"{IND1}/federation/notify"}}

    chain = validate(links, keys)
    registry = chain.metadata["compute_registry"]
    assert registry["resource_types"] == ["gpu"]
    assert registry["contacts"] == ["admin@ind1.example", "noc@national.example", "ops@gz.example"]
    assert registry["sync_mode"] == "pull"
    assert registry["notify_endpoint"] == f"{IND1}/federation/notify"
    assert chain.policy["compute_registry"]["resource_types"] == {"default": ["cpu"], "subset_of": ["cpu", "gpu"]}

    del links[0].claims["metadata"]["compute_registry"]["resource_types"]
    assert validate(links, keys).metadata["compute_registry"]["resource_types"] == ["cpu"]  # default, then subset_of


def test_unknown_non_critical_operator_is_ignored(keys):
    links = three_level(keys)
    policy_of(links[1])["ucri_prefixes"]["regexp"] = "^86\\."
    assert validate(links, keys).policy["compute_registry"]["ucri_prefixes"] == {"prefix_within": ["86.52.IND1"]}


def test_max_path_length_counts_intermediates_below_the_issuer(keys):
    links = three_level(keys)
    links[1].claims["constraints"] = {"max_path_length": 0}  # gz -> ind1: no intermediate between them
    assert validate(links, keys).subject == IND1


def test_naming_constraints_permit_subdomains(keys):
    links = three_level(keys)
    links[2].claims["constraints"] = {"naming_constraints": {"permitted": [".example"], "excluded": ["evil.example"]}}
    assert validate(links, keys).subject == IND1


def test_allowed_entity_types_strip_other_metadata(keys):
    links = three_level(keys)
    links[0].claims["metadata"]["openid_relying_party"] = {"client_name": "x"}
    links[2].claims["constraints"] = {"allowed_entity_types": ["compute_registry"]}
    assert set(validate(links, keys).metadata) == {"federation_entity", "compute_registry"}


# Rejections -----------------------------------------------------------------------------------------

Mutation = Callable[[list[Link], dict], None]


def set_claims(index: int, **claims) -> Mutation:
    return lambda links, keys: links[index].claims.update(claims)


def sign_with(index: int, key_name: str, *, list_in_own_jwks: bool = False) -> Mutation:
    def mutate(links, keys):
        links[index].key = keys[key_name]
        if list_in_own_jwks:
            links[index].claims["jwks"] = {"keys": [jwk(keys[key_name])]}
    return mutate


def edit(fn: Callable[[list[Link]], object]) -> Mutation:
    return lambda links, keys: fn(links)


REJECTIONS = [
    pytest.param(sign_with(1, "gy"), "invalid_signature", id="statement-signed-by-a-sibling-intermediate"),
    pytest.param(sign_with(0, "rogue", list_in_own_jwks=True), "invalid_signature",
                 id="leaf-signed-with-a-key-its-superior-did-not-vouch-for"),
    pytest.param(lambda links, keys: links[0].claims["jwks"].update(keys=[jwk(keys["rogue"])]), "invalid_signature",
                 id="leaf-signing-key-missing-from-its-own-jwks"),
    pytest.param(sign_with(2, "gz"), "invalid_signature", id="anchor-statement-signed-by-the-intermediate"),
    pytest.param(set_claims(1, sub="https://other.example"), "broken_link", id="iss-sub-link-broken"),
    pytest.param(set_claims(2, sub="https://gy.example"), "broken_link", id="upper-link-broken"),
    pytest.param(set_claims(0, authority_hints=["https://gy.example"]), "broken_link",
                 id="leaf-authority-hints-omit-its-superior"),
    pytest.param(edit(lambda links: links[0].claims.pop("authority_hints")), "broken_link",
                 id="leaf-without-authority-hints"),
    pytest.param(set_claims(1, iat=NOW - 7200, exp=NOW - 3600), "expired", id="expired-subordinate-statement"),
    pytest.param(set_claims(3, iat=NOW - 7200, exp=NOW - 61), "expired", id="expired-anchor-configuration"),
    pytest.param(set_claims(0, iat=NOW + 3600, exp=NOW + 7200), "not_yet_valid", id="iat-in-the-future"),
    pytest.param(set_claims(1, iat=NOW - 60, exp=NOW + 2 * 86400), "lifetime_exceeded", id="lives-over-a-day"),
    pytest.param(edit(lambda links: setattr(links[1], "typ", "JWT")), "invalid_typ", id="wrong-typ"),
    pytest.param(edit(lambda links: links[1].claims.pop("jwks")), "malformed", id="missing-jwks"),
    pytest.param(set_claims(1, jwks={"keys": []}), "malformed", id="empty-jwks"),
    pytest.param(edit(lambda links: links[2].claims.pop("exp")), "malformed", id="missing-exp"),
    pytest.param(set_claims(3, sub="https://other.example"), "malformed", id="anchor-configuration-iss-not-sub"),
    pytest.param(set_claims(1, crit=["jti"], jti="x"), "unknown_critical_claim", id="unknown-critical-claim"),
    pytest.param(set_claims(0, constraints={"max_path_length": 5}), "malformed", id="constraints-in-a-configuration"),
    pytest.param(lambda links, keys: links[0].claims["metadata"]["compute_registry"].update(
        ucri_prefixes=["86.11.X"]), "policy_violation", id="leaf-prefix-outside-prefix-within"),
    pytest.param(lambda links, keys: links[0].claims["metadata"]["compute_registry"].update(
        ucri_prefixes=["86.52.IND10"]), "policy_violation", id="prefix-within-is-segment-wise"),
    pytest.param(edit(lambda links: policy_of(links[2]).update(ucri_prefixes={"prefix_within": ["86.11"]})),
                 "policy_violation", id="intermediate-list-not-within-superiors"),
    pytest.param(edit(lambda links: policy_of(links[1])["ucri_prefixes"].update(frobnicate=True)
                      or links[1].claims.update(metadata_policy_crit=["prefix_within", "frobnicate"])),
                 "unknown_critical_operator", id="unknown-critical-operator"),
    pytest.param(edit(lambda links: policy_of(links[1])["ucri_prefixes"].update(frobnicate=True)
                      or links[2].claims.update(metadata_policy_crit=["prefix_within", "frobnicate"])),
                 "unknown_critical_operator", id="critical-in-any-statement-binds-the-chain"),
    pytest.param(set_claims(2, constraints={"max_path_length": 0}), "max_path_length",
                 id="max-path-length-0-with-an-intermediate"),
    pytest.param(set_claims(2, constraints={"max_path_length": -1}), "malformed", id="negative-max-path-length"),
    pytest.param(set_claims(2, constraints={"naming_constraints": {"excluded": ["ind1.example"]}}),
                 "naming_constraints", id="leaf-excluded-by-naming-constraints"),
    pytest.param(set_claims(2, constraints={"naming_constraints": {"permitted": [".gov.example"]}}),
                 "naming_constraints", id="subordinate-outside-permitted-names"),
    pytest.param(edit(lambda links: (policy_of(links[2]).update(sync_mode={"value": "pull"}),
                                     policy_of(links[1]).update(sync_mode={"value": "push"}))),
                 "policy_violation", id="conflicting-value-operators"),
    pytest.param(edit(lambda links: policy_of(links[2]).update(contacts={"essential": True})), "policy_violation",
                 id="essential-parameter-missing"),
]


@pytest.mark.parametrize(("mutate", "reason"), REJECTIONS)
def test_rejections(keys, mutate, reason):
    links = three_level(keys)
    mutate(links, keys)
    with pytest.raises(TrustChainError) as excinfo:
        validate(links, keys)
    assert excinfo.value.reason == reason, str(excinfo.value)


@pytest.mark.parametrize(("pinned", "reason"), [
    pytest.param({}, "untrusted_anchor", id="unknown-anchor"),
    pytest.param({"https://other-anchor.example": "national"}, "untrusted_anchor", id="anchor-pinned-under-other-id"),
    pytest.param({NATIONAL: "rogue"}, "invalid_signature", id="pinned-key-differs-from-the-signing-key"),
])
def test_anchor_must_be_pinned_with_the_key_it_signs_with(keys, pinned, reason):
    pins = {entity: [jwk(keys[name])] for entity, name in pinned.items()}
    for links in (three_level(keys), [anchor_ec(keys)]):
        with pytest.raises(TrustChainError) as excinfo:
            validate(links, keys, anchors=pins)
        assert excinfo.value.reason == reason


def test_anchor_publishing_a_rogue_key_about_itself_does_not_help(keys):
    links = [anchor_ec(keys)]
    sign_with(0, "rogue", list_in_own_jwks=True)(links, keys)
    with pytest.raises(TrustChainError) as excinfo:
        validate(links, keys)
    assert excinfo.value.reason == "invalid_signature"


def test_tampered_payload(keys):
    tokens_ = [link.token() for link in three_level(keys)]
    header, payload, signature = tokens_[1].split(".")
    claims = json.loads(crypto.b64url_decode(payload))
    claims["metadata_policy"]["compute_registry"]["ucri_prefixes"]["prefix_within"] = ["86.52"]
    tokens_[1] = ".".join([header, crypto.b64url(json.dumps(claims).encode()), signature])
    with pytest.raises(TrustChainError) as excinfo:
        trust.validate_chain(tokens_, anchors=anchors(keys), now=NOW)
    assert (excinfo.value.reason, excinfo.value.index) == ("invalid_signature", 1)


@pytest.mark.parametrize(("shape", "reason"), [
    ("empty", "malformed"), ("string", "malformed"), ("two", "malformed"),
    ("reversed", "untrusted_anchor"),  # the leaf's configuration now sits where the anchor's belongs
    ("loop", "broken_link"), ("repeated-entity", "broken_link"),
])
def test_malformed_chain_shapes(keys, shape, reason):
    t = [link.token() for link in three_level(keys)]
    chain = {
        "empty": [], "string": t[0], "two": [t[0], t[3]], "reversed": t[::-1],
        "loop": [t[0], t[1], t[1], t[2], t[3]],
        # gz about ind1, then "ind1 about gz": every iss/sub link holds, but ind1 would be its own superior.
        "repeated-entity": [t[0], t[1], Link(statement(IND1, GZ, keys["gz"]), keys["ind1"]).token(), t[1], t[2], t[3]],
    }[shape]
    with pytest.raises(TrustChainError) as excinfo:
        trust.validate_chain(chain, anchors=anchors(keys), now=NOW)
    assert excinfo.value.reason == reason, str(excinfo.value)


def test_decode_unverified(keys):
    token = three_level(keys)[0].token()
    assert trust.decode_unverified(token)["authority_hints"] == [GZ]
    unsigned = ".".join(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
                        for p in ({"alg": "none", "typ": ES_TYP}, {"iss": IND1}))
    with pytest.raises(TrustChainError) as excinfo:
        trust.decode_unverified(unsigned + ".")
    assert excinfo.value.reason == "malformed"
    with pytest.raises(TrustChainError) as excinfo:
        trust.decode_unverified(unsigned + ".c2ln")
    assert excinfo.value.reason == "invalid_alg"


# Operators, merged and applied without signatures ---------------------------------------------------

def resolve(*policies: dict, metadata: dict, crit=()) -> dict:
    merged = trust.merge_policies(({"t": p} for p in policies), crit=crit)
    return trust.apply_policy({"t": metadata}, merged)["t"]


@pytest.mark.parametrize(("policies", "metadata", "expected"), [
    pytest.param([{"p": {"value": "x"}}], {"p": "y"}, {"p": "x"}, id="value-overrides"),
    pytest.param([{"p": {"value": None}}], {"p": "y"}, {}, id="value-null-removes"),
    pytest.param([{"p": {"value": ["a"]}}, {"p": {"value": ["a"]}}], {}, {"p": ["a"]}, id="equal-values-merge"),
    pytest.param([{"p": {"add": ["a"]}}, {"p": {"add": ["b", "a"]}}], {"p": ["c"]}, {"p": ["c", "a", "b"]},
                 id="add-unions"),
    pytest.param([{"p": {"add": ["a"]}}], {}, {"p": ["a"]}, id="add-initialises"),
    pytest.param([{"p": {"default": "d"}}], {}, {"p": "d"}, id="default-when-absent"),
    pytest.param([{"p": {"default": "d"}}], {"p": "x"}, {"p": "x"}, id="default-when-present"),
    pytest.param([{"p": {"one_of": ["a", "b"]}}, {"p": {"one_of": ["b", "c"]}}], {"p": "b"}, {"p": "b"},
                 id="one-of-intersects"),
    pytest.param([{"p": {"one_of": ["a"], "default": "a"}}], {}, {"p": "a"}, id="one-of-with-default"),
    pytest.param([{"p": {"subset_of": ["a", "b", "c"]}}, {"p": {"subset_of": ["b", "c", "d"]}}], {"p": ["a", "b"]},
                 {"p": ["b"]}, id="subset-of-intersects-and-narrows"),
    pytest.param([{"p": {"subset_of": ["a"]}}, {"p": {"subset_of": ["b"]}}], {"p": ["a"]}, {"p": []},
                 id="subset-of-may-become-empty"),
    pytest.param([{"p": {"subset_of": ["a"]}}], {}, {}, id="subset-of-skips-an-absent-parameter"),
    pytest.param([{"p": {"superset_of": ["a"]}}, {"p": {"superset_of": ["b"]}}], {"p": ["a", "b", "c"]},
                 {"p": ["a", "b", "c"]}, id="superset-of-unions"),
    pytest.param([{"p": {"essential": False}}, {"p": {"essential": True}}], {"p": 1}, {"p": 1},
                 id="essential-ors"),
    pytest.param([{"p": {"prefix_within": ["86"]}}, {"p": {"prefix_within": ["86.52", "86.11.A"]}}],
                 {"p": ["86.52.X", "86.11.A"]}, {"p": ["86.52.X", "86.11.A"]}, id="prefix-within-narrows"),
])
def test_operators(policies, metadata, expected):
    assert resolve(*policies, metadata=metadata) == expected


@pytest.mark.parametrize(("policies", "metadata"), [
    pytest.param([{"p": {"value": "x"}}, {"p": {"value": "y"}}], {}, id="conflicting-values"),
    pytest.param([{"p": {"value": True}}, {"p": {"value": 1}}], {}, id="true-is-not-1"),
    pytest.param([{"p": {"default": "x"}}, {"p": {"default": "y"}}], {}, id="conflicting-defaults"),
    pytest.param([{"p": {"one_of": ["a"]}}, {"p": {"one_of": ["b"]}}], {}, id="one-of-without-overlap"),
    pytest.param([{"p": {"one_of": ["a"]}}], {"p": "b"}, id="not-one-of"),
    pytest.param([{"p": {"one_of": ["a"]}}, {"p": {"subset_of": ["a"]}}], {}, id="one-of-with-subset-of"),
    pytest.param([{"p": {"add": ["z"], "subset_of": ["a"]}}], {}, id="add-outside-subset-of"),
    pytest.param([{"p": {"subset_of": ["a"]}}, {"p": {"superset_of": ["b"]}}], {}, id="superset-outside-subset"),
    pytest.param([{"p": {"value": "c", "one_of": ["a", "b"]}}], {}, id="value-not-in-one-of"),
    pytest.param([{"p": {"value": None, "essential": True}}], {}, id="value-null-and-essential"),
    pytest.param([{"p": {"superset_of": ["a", "b"]}}], {"p": ["a"]}, id="missing-superset-values"),
    pytest.param([{"p": {"subset_of": ["a"]}}], {"p": "a"}, id="subset-of-on-a-string"),
    pytest.param([{"p": {"essential": True}}], {}, id="essential-missing"),
    pytest.param([{"p": {"essential": "yes"}}], {"p": 1}, id="essential-not-boolean"),
    pytest.param([{"p": {"one_of": []}}], {}, id="empty-one-of"),
    pytest.param([{"p": {"prefix_within": ["86.52"]}}, {"p": {"prefix_within": ["86.11"]}}], {},
                 id="prefix-within-widened"),
    pytest.param([{"p": {"prefix_within": ["86.52"]}}], {"p": ["86.5"]}, id="prefix-within-not-string-prefix"),
])
def test_operator_violations(policies, metadata):
    with pytest.raises(TrustChainError) as excinfo:
        resolve(*policies, metadata=metadata)
    assert excinfo.value.reason == "policy_violation"


def test_policy_for_an_undeclared_entity_type_adds_nothing():
    merged = trust.merge_policies([{"openid_provider": {"issuer": {"essential": True}}}])
    assert trust.apply_policy({"compute_registry": {}}, merged) == {"compute_registry": {}}
