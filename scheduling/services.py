"""Scheduling handoff (CONTRACT §7): issue DPoP-bound tickets, take acknowledgements, expire the rest."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import rfc8785
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from core import audit
from core.errors import ApplicationError
from identity import crypto, keys, replay, tokens
from identity.models import Purpose
from registry import identifiers
from registry.models import Downtime, Provider, Resource, Source
from registry.services import this_node

from .kit import normalize_url
from .models import Handoff

MAX_JOB_BYTES = 256 * 1024
ACK_LEEWAY = dt.timedelta(seconds=tokens.LEEWAY)
BODY_MEMBERS = frozenset({"ucri", "job", "endpoint"})


def job_sha256(job: Any) -> str:
    """Hex SHA-256 of the RFC 8785 canonical JSON of ``job`` (exactly as RFC 8785 defines it)."""
    return hashlib.sha256(rfc8785.dumps(job)).hexdigest()


def verify_proof(proof: str | None, *, method: str, url: str, access_token: str) -> str:
    """Verify the scheduler's DPoP proof at issuance; returns the thumbprint of its key."""
    if not proof:
        raise ApplicationError("dpop_required", "send a DPoP proof in the DPoP header (RFC 9449)")
    try:
        verified = tokens.verify(proof, tokens.DPOP_PROOF, replay=replay.remember_once)
    except tokens.TokenError as exc:
        raise ApplicationError("invalid_dpop_proof", f"DPoP proof rejected: {exc}", extra={"reason": exc.reason}) \
            from exc
    claims = verified.claims
    problems = []
    if claims.get("htm") != method:
        problems.append("htm")
    try:
        htu_ok = isinstance(claims.get("htu"), str) and normalize_url(claims["htu"]) == normalize_url(url)
    except ValueError:  # an unparsable URL (bad port, broken IPv6 literal)
        htu_ok = False
    if not htu_ok:
        problems.append("htu")
    if claims.get("ath") != crypto.sha256_b64url(access_token):
        problems.append("ath")
    if problems:
        raise ApplicationError("invalid_dpop_proof", "the DPoP proof does not match this request: "
                               + ", ".join(problems), extra={"reason": problems[0]})
    return crypto.thumbprint(verified.jwk)


def _credential_status(provider: Provider) -> str | None:
    if provider.source == Source.MIRROR:
        lookup = getattr(settings, "CIR_MIRRORED_STATUS_LOOKUP", None)
        if lookup:
            return import_string(lookup)(provider)
    return provider.effective_credential_status()


def _parse_body(body: Any) -> tuple[str, Any, str | None]:
    if not isinstance(body, dict) or not {"ucri", "job"} <= set(body) or set(body) - BODY_MEMBERS:
        raise ApplicationError("invalid_request", 'the body is {"ucri", "job", "endpoint" (optional)}')
    job, endpoint = body["job"], body.get("endpoint")
    if not isinstance(job, dict):
        raise ApplicationError("invalid_job", "job must be a JSON object")
    try:
        canonical = rfc8785.dumps(job)
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise ApplicationError("invalid_job", f"job cannot be canonicalised (RFC 8785): {exc}") from exc
    if len(canonical) > MAX_JOB_BYTES:
        raise ApplicationError("invalid_job", f"a job is at most {MAX_JOB_BYTES} bytes of canonical JSON")
    if endpoint is not None and not isinstance(endpoint, str):
        raise ApplicationError("invalid_request", "endpoint must be one of the resource's endpoint URLs")
    if not isinstance(body["ucri"], str):
        raise ApplicationError("ucri_malformed", "ucri must be a string")
    return body["ucri"], job, endpoint


@dataclass(frozen=True)
class _Target:
    """What issuance needs of a resource: its status and endpoints, its provider, and whether a downtime
    of its own or of its site is under way (the ongoing part of ``selectors.current_downtimes``)."""

    status: str
    endpoints: list[dict[str, Any]]
    provider: Provider
    in_downtime: bool


class _TargetLookup:
    """The lookup by UCRI as one fixed statement built once per process: compiling the equivalent ORM
    query (join, downtime subquery) cost several times what PostgreSQL takes to answer it. The provider
    comes back as the ORM would build it (database converters applied)."""

    @functools.cached_property
    def _statement(self) -> tuple[str, list[str], list[tuple[list, Any]]]:
        qn = connection.ops.quote_name
        fields = Provider._meta.concrete_fields
        converters = []
        for f in fields:
            col = f.get_col("p")
            converters.append((connection.ops.get_db_converters(col) + col.get_db_converters(connection), col))
        r, d = Resource._meta, Downtime._meta
        column = {name: qn(r.get_field(name).column)
                  for name in ("status", "endpoints", "provider", "site", "ucri")}
        sql = (f"SELECT r.{column['status']}, r.{column['endpoints']}, EXISTS (SELECT 1 FROM {qn(d.db_table)} d"  # noqa: S608
               f" WHERE (d.{qn(d.get_field('resource').column)} = r.{qn(r.pk.column)}"
               f" OR d.{qn(d.get_field('site').column)} = r.{column['site']})"
               f" AND d.{qn(d.get_field('start').column)} <= %s AND d.{qn(d.get_field('end').column)} > %s), "
               + ", ".join(f"p.{qn(f.column)}" for f in fields)
               + f" FROM {qn(r.db_table)} r INNER JOIN {qn(Provider._meta.db_table)} p"
               f" ON r.{column['provider']} = p.{qn(Provider._meta.pk.column)} WHERE r.{column['ucri']} = %s")
        return sql, [f.attname for f in fields], converters

    def __call__(self, ucri: str) -> _Target | None:
        sql, attnames, converters = self._statement
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, now, ucri])
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row[3:])
        for i, (functions, col) in enumerate(converters):
            for convert in functions:
                values[i] = convert(values[i], col, connection)
        endpoints = Resource._meta.get_field("endpoints").from_db_value(row[1], None, connection)
        return _Target(row[0], endpoints, Provider.from_db(connection.alias, attnames, values), bool(row[2]))


_find_target = _TargetLookup()


@functools.cache
def _insert_statement() -> tuple[str, tuple]:
    fields = Handoff._meta.concrete_fields
    qn = connection.ops.quote_name
    return (f"INSERT INTO {qn(Handoff._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(fields))})"), tuple(fields)


def _insert(handoff: Handoff) -> None:
    """``handoff.save(force_insert=True)`` as a fixed statement (values prepared by the model's fields)."""
    sql, fields = _insert_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [f.get_db_prep_save(f.pre_save(handoff, True), connection) for f in fields])
    handoff._state.adding, handoff._state.db = False, connection.alias


def _available(resource: _Target) -> bool:
    return resource.status == Resource.Status.ACTIVE and not resource.in_downtime


def request_handoff(*, client_id: str, body: Any, access_token: str, proof: str | None, method: str,
                    url: str) -> tuple[Handoff, str]:
    """Check the request, the resource and its provider, and issue a ticket (CONTRACT §7)."""
    text, job, endpoint = _parse_body(body)
    jkt = verify_proof(proof, method=method, url=url, access_token=access_token)
    try:
        ucri = identifiers.canonicalize(text)
    except identifiers.UCRIError as exc:
        raise ApplicationError(exc.code, str(exc)) from exc
    resource = _find_target(ucri)
    if resource is None:
        raise ApplicationError("ucri_unknown", f"no resource is registered here as {ucri}", status=404)
    if not _available(resource):
        state = resource.status if resource.status != Resource.Status.ACTIVE else "in a downtime"
        raise ApplicationError("resource_unavailable", f"{ucri} is {state}", status=409)
    status = _credential_status(resource.provider)
    if status != "valid":
        raise ApplicationError(f"provider_credential_{status or 'missing'}",
                               f"the provider's credential is {status or 'missing'}", status=403)
    urls = [e["url"] for e in resource.endpoints]
    if endpoint is None:
        if not urls:
            raise ApplicationError("resource_unavailable", f"{ucri} publishes no endpoint", status=409)
        endpoint = urls[0]
    elif endpoint not in urls:
        raise ApplicationError("invalid_endpoint", "endpoint must be one of the resource's endpoint URLs")
    now = timezone.now()
    lifetime = min(settings.CIR_HANDOFF_LIFETIME, 300)
    handoff = Handoff(id=uuid.uuid4(), ucri=ucri, provider_prefix=resource.provider.prefix, scheduler=client_id,
                      endpoint=endpoint, job_sha256=job_sha256(job), jkt=jkt, ticket_jti=uuid.uuid4().hex,
                      issued_at=now, expires_at=now + dt.timedelta(seconds=lifetime))
    issued = int(now.timestamp())
    claims = {"iss": this_node().entity_id, "aud": handoff.provider_prefix, "sub": client_id,
              "handoff_id": str(handoff.id), "ucri": ucri, "endpoint": endpoint, "job_sha256": handoff.job_sha256,
              "cnf": {"jkt": jkt}, "jti": handoff.ticket_jti, "iat": issued, "exp": issued + lifetime}
    ticket = keys.sign(Purpose.HANDOFF, claims, typ="handoff+jwt").token  # before the transaction: it holds locks
    with transaction.atomic():
        _insert(handoff)
        audit.record(actor=f"client:{client_id}", action="handoff.issued", target_type="handoff",
                     target_key=str(handoff.id), data={"ucri": ucri, "endpoint": endpoint,
                                                        "job_sha256": handoff.job_sha256, "jkt": jkt})
    return handoff, ticket


def _find(handoff_id: str) -> Handoff | None:
    try:
        return Handoff.objects.filter(pk=uuid.UUID(str(handoff_id))).first()
    except ValueError:
        return None


def _not_found() -> ApplicationError:
    return ApplicationError("not_found", "no such handoff", status=404)


def _addressed_provider(handoff: Handoff, provider_id: int | None) -> bool:
    return provider_id is not None and Provider.objects.filter(pk=provider_id,
                                                               prefix=handoff.provider_prefix).exists()


def visible(handoff_id: str, *, client_id: str, scopes: frozenset[str], provider_id: int | None) -> Handoff:
    """The scheduler that asked (``handoff:request``) or the addressed provider (``handoff:ack``); anyone
    else gets the same 404 as for a handoff that does not exist."""
    handoff = _find(handoff_id)
    if handoff is None:
        raise _not_found()
    if "handoff:request" in scopes and handoff.scheduler == client_id:
        return _refresh_expiry(handoff)
    if "handoff:ack" in scopes and _addressed_provider(handoff, provider_id):
        return _refresh_expiry(handoff)
    raise _not_found()


def _refresh_expiry(handoff: Handoff) -> Handoff:
    if handoff.status == Handoff.Status.ISSUED and handoff.expires_at + ACK_LEEWAY <= timezone.now():
        Handoff.objects.filter(pk=handoff.pk, status=Handoff.Status.ISSUED).update(status=Handoff.Status.EXPIRED)
        handoff.refresh_from_db()
    return handoff


def acknowledge(handoff_id: str, *, provider_id: int | None, client_id: str, body: Any) -> Handoff:
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "accepted" not in body or set(body) - {"accepted", "reason"} \
            or not isinstance(body["accepted"], bool) or not isinstance(reason or "", str) \
            or len(reason or "") > 500:
        raise ApplicationError("invalid_request", 'the body is {"accepted": true|false, "reason": "..."}')
    with transaction.atomic():
        handoff = _find(handoff_id)
        if handoff is None or not _addressed_provider(handoff, provider_id):
            raise _not_found()
        handoff = Handoff.objects.select_for_update().get(pk=handoff.pk)
        if handoff.status in (Handoff.Status.ACCEPTED, Handoff.Status.REJECTED):
            raise ApplicationError("already_acknowledged", f"the handoff was already {handoff.status}", status=409)
        # The provider's kit accepts a ticket until exp + leeway; so does the acknowledgement.
        expired = handoff.status == Handoff.Status.EXPIRED or handoff.expires_at + ACK_LEEWAY <= timezone.now()
        if expired:
            Handoff.objects.filter(pk=handoff.pk).update(status=Handoff.Status.EXPIRED)
        else:
            handoff.status = Handoff.Status.ACCEPTED if body["accepted"] else Handoff.Status.REJECTED
            handoff.reason = body.get("reason") or ""
            handoff.acknowledged_at = timezone.now()
            handoff.save(update_fields=["status", "reason", "acknowledged_at"])
            audit.record(actor=f"client:{client_id}", action=f"handoff.{handoff.status}", target_type="handoff",
                         target_key=str(handoff.id), data={"reason": handoff.reason})
    if expired:  # raised after the commit, so the expiry is recorded
        raise ApplicationError("handoff_expired", "the ticket expired before it was acknowledged", status=409)
    return handoff


def expire_due(now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    return Handoff.objects.filter(status=Handoff.Status.ISSUED, expires_at__lte=now - ACK_LEEWAY).update(
        status=Handoff.Status.EXPIRED)


def public(handoff: Handoff) -> dict[str, Any]:
    from registry.records import timestamp

    return {"id": str(handoff.id), "ucri": handoff.ucri, "provider": handoff.provider_prefix,
            "provider_endpoint": handoff.endpoint, "job_sha256": handoff.job_sha256, "status": handoff.status,
            "issued_at": timestamp(handoff.issued_at), "expires_at": timestamp(handoff.expires_at),
            "acknowledged_at": timestamp(handoff.acknowledged_at), "reason": handoff.reason or None}
