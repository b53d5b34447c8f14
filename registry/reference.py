"""Reference facts shipped with the app (copied from the project's shared data, CONTRACT §9 and §4)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


class _Named:
    name_en: str
    name_zh: str

    def name(self, chinese: bool) -> str:
        """The name in the reader's language: Chinese for ``zh-*`` pages, English otherwise."""
        return self.name_zh if chinese else self.name_en


@dataclass(frozen=True)
class Province(_Named):
    code: str
    name_en: str
    name_zh: str
    hub: str | None


@dataclass(frozen=True)
class Hub(_Named):
    code: str
    name_en: str
    name_zh: str
    region: str  # east = demand hubs, west = energy-rich hubs


@dataclass(frozen=True)
class Accelerator:
    model: str
    vendor: str
    type: str
    kind: str
    fp64_tflops: float | None
    fp32_tflops: float | None
    fp16_tflops: float | None
    int8_tops: float | None
    memory_gb: float | None
    typical_price: str


def _rows(name: str) -> list[dict[str, str]]:
    with (REFERENCE_DIR / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def provinces() -> dict[str, Province]:
    return {
        row["code"]: Province(row["code"], row["name_en"], row["name_zh"], row["hub"] or None)
        for row in _rows("provinces.csv")
    }


@cache
def hubs() -> dict[str, Hub]:
    return {row["code"]: Hub(row["code"], row["name_en"], row["name_zh"], row["region"]) for row in _rows("hubs.csv")}


@cache
def accelerators() -> dict[str, Accelerator]:
    return {
        row["model"]: Accelerator(
            model=row["model"], vendor=row["vendor"], type=row["type"], kind=row["kind"],
            fp64_tflops=_number(row["fp64_tflops"]), fp32_tflops=_number(row["fp32_tflops"]),
            fp16_tflops=_number(row["fp16_tflops"]), int8_tops=_number(row["int8_tops"]),
            memory_gb=_number(row["memory_gb"]), typical_price=row["typical_price_per_card_hour_cny"],
        )
        for row in _rows("accelerators.csv")
    }


@cache
def targets() -> list[dict[str, str]]:
    return _rows("targets.csv")


def hub_for_province(code: str) -> str | None:
    return provinces()[code].hub


def pue_target(hub: str | None) -> float | None:
    """The 2022 hub plan: PUE <= 1.2 in the western hubs and <= 1.25 in the eastern ones."""
    if hub is None or hub not in hubs():
        return None
    return 1.2 if hubs()[hub].region == "west" else 1.25
