"""Field validators shared by models, services, the API and the CSV import."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from stdnum.cn import uscc as uscc_module
from stdnum.exceptions import ValidationError as StdnumError

from . import reference

ENDPOINT_TYPES = ("slurm", "kubernetes", "openstack", "hpc-portal", "api")


def validate_uscc(value: str) -> str:
    """The 18-character unified social credit code of GB 32100-2015, check character included."""
    try:
        return uscc_module.validate(value)
    except StdnumError as exc:
        raise ValidationError(f"not a valid unified social credit code: {exc}") from exc


def validate_province(value: str) -> str:
    if value not in reference.provinces():
        raise ValidationError(f"{value!r} is not a GB/T 2260 two-digit province code")
    return value


def validate_endpoints(value: Any) -> list[dict[str, str]]:
    """``[{"type": ..., "url": "https://..."}]``; returns the list with only those two keys."""
    if not isinstance(value, list):
        raise ValidationError("endpoints must be a list of {type, url} objects")
    cleaned: list[dict[str, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"type", "url"}:
            raise ValidationError(f"endpoint {index}: must be an object with exactly 'type' and 'url'")
        kind, url = item["type"], item["url"]
        if kind not in ENDPOINT_TYPES:
            raise ValidationError(f"endpoint {index}: type must be one of {', '.join(ENDPOINT_TYPES)}")
        if not isinstance(url, str) or len(url) > 2000:
            raise ValidationError(f"endpoint {index}: url must be a string")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or any(ch.isspace() for ch in url):
            raise ValidationError(f"endpoint {index}: url must be an absolute https:// URL")
        cleaned.append({"type": kind, "url": url})
    return cleaned


def parse_endpoints_cell(text: str) -> list[dict[str, str]]:
    """The CSV form: ``type|url`` pairs separated by ``;`` (CONTRACT §9)."""
    endpoints = []
    for index, pair in enumerate(part.strip() for part in text.split(";")):
        if not pair:
            continue
        kind, sep, url = pair.partition("|")
        if not sep:
            raise ValidationError(f"endpoint {index}: expected 'type|url', got {pair!r}")
        endpoints.append({"type": kind.strip(), "url": url.strip()})
    return validate_endpoints(endpoints)


def format_endpoints_cell(endpoints: list[dict[str, str]]) -> str:
    return ";".join(f"{e['type']}|{e['url']}" for e in endpoints)
