"""A report as an ordered list of blocks, rendered to Markdown (tables by pandas/tabulate)
and to HTML (the same Markdown through the ``markdown`` library): one source, two views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

import markdown
import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}img{max-width:100%}code{background:#f5f5f5;padding:0 3px}"""


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell ("–" for NaN/None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2g}"
    return str(value)


def fmt_ci(mean: float, low: float, high: float, digits: int = 1) -> str:
    """ "mean [low, high]" (just the mean when the interval is unknown)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_p(p: float) -> str:
    """A p-value as reviewers read it."""
    if not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclass
class Report:
    """Blocks in order: ("h", level, text) | ("p", text) | ("table", DataFrame) | ("img", path, caption)."""

    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        parts = [f"# {self.title}"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                parts.append(block[1])
            elif kind == "table":
                frame: pd.DataFrame = block[1]
                parts.append(frame.to_markdown(index=False) if not frame.empty else "_(none)_")
            elif kind == "img":
                parts.append(f"![{block[2]}]({block[1]})\n\n_{block[2]}_")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = markdown.markdown(self.markdown(), extensions=["tables"])
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{self.title}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n"
        )


def display(frame: pd.DataFrame, digits: Union[int, dict[str, int]] = 2) -> pd.DataFrame:
    """A copy with numbers formatted for reading (per-column digits optional)."""
    out = frame.copy()
    for column in out.columns:
        d = digits.get(column, 2) if isinstance(digits, dict) else digits
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = [fmt(v, d) for v in out[column]]
    return out
