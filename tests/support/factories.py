"""Small builders for catalog objects. They go through the services, like every real write."""

from __future__ import annotations

import itertools
from typing import Any

from registry import services
from registry.models import Platform, Provider, Resource, Site

_counter = itertools.count(1)

def valid_uscc(n: int | None = None) -> str:
    """An 18-character unified social credit code (GB 32100-2015) with a correct check character."""
    from stdnum.cn import uscc

    n = next(_counter) if n is None else n
    body = f"9152{n:06d}MA{n % 10000:04d}"[:17].ljust(17, "0")
    return body + uscc.calc_check_digit(body)


def node(*, role: str = "provincial", code: str | None = "52", entity_id: str = "http://127.0.0.1:8052") -> Platform:
    platform, _ = services.node_init(role=role, code=code, entity_id=entity_id)
    return platform


def provider(*, code: str | None = None, name: str | None = None, uscc: str | None = None) -> Provider:
    n = next(_counter)
    return services.provider_approve(name=name or f"Provider {n}", uscc=uscc or valid_uscc(n),
                                     code=code or f"P{n:03d}")


def site(provider: Provider, **overrides: Any) -> Site:
    data = {"name": f"Site {next(_counter)}", "province": "52", "pue": 1.2, "green_ratio": 0.5,
            "rack_availability": 0.7}
    data.update(overrides)
    return services.site_create(provider=provider, data=data)


def resource_data(site: Site, **overrides: Any) -> dict[str, Any]:
    data = {
        "local_id": f"asset-{next(_counter)}", "name": "A100 training pool", "kind": "intelligent",
        "site_id": str(site.id), "accelerator": "GPU", "accelerator_model": "A100 SXM 80GB",
        "accelerator_count": 64, "node_count": 8, "status": "active", "fp64_tflops": 620.8,
        "fp32_tflops": 1248.0, "fp16_tflops": 19968.0, "int8_tops": 39936.0, "memory_gb": 5120.0,
        "storage_tb": 200.0, "price_per_hour": "8.5", "price_unit": "card", "price_per_million_tokens": None,
        "endpoints": [{"type": "slurm", "url": "https://slurm.example.cn/slurmrestd"}],
    }
    data.update(overrides)
    return data


def resource(site: Site, **overrides: Any) -> Resource:
    return services.resource_create(provider=site.provider, data=resource_data(site, **overrides))
