"""Reading /metrics in tests: prometheus-client's own text-format parser, then plain lookups."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics answer, parsed by prometheus-client's own text-format parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def values(self, sample_name: str, **match: str) -> dict[tuple, float]:
        """{label values in label-name order (``match`` left out): value} of the samples named ``sample_name``."""
        found = {}
        for family in self.families.values():
            for sample in family.samples:
                if sample.name != sample_name or any(sample.labels.get(k) != v for k, v in match.items()):
                    continue
                key = tuple(v for k, v in sorted(sample.labels.items()) if k not in match)
                found[key] = sample.value
        return found

    def value(self, sample_name: str, **match: str) -> float:
        found = self.values(sample_name, **match)
        assert len(found) == 1, (sample_name, match, found)
        return next(iter(found.values()))

    def exported_names(self) -> set[str]:
        """Every name a query may use: families, their samples, and the suffixed series of counters
        and histograms."""
        names = set()
        for family in self.families.values():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return names


def scrape(client, **extra) -> Scrape:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.content.decode())
