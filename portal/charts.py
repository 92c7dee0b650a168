"""Inline SVG charts: no JavaScript, nothing from a CDN, and allowed by our CSP."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sparkline:
    line: str  # an SVG path
    area: str
    width: int
    height: int
    last: float | None
    low: float | None
    high: float | None

    @property
    def empty(self) -> bool:
        return self.last is None


def sparkline(
    values: list[float | None],
    *,
    width: int = 240,
    height: int = 48,
    floor: float | None = None,
    ceiling: float | None = None,
) -> Sparkline:
    """A line (and the area under it) through `values`, gaps where a value is None."""
    known = [v for v in values if v is not None]
    if not known:
        return Sparkline("", "", width, height, None, None, None)
    low = min(known) if floor is None else min(floor, min(known))
    high = max(known) if ceiling is None else max(ceiling, max(known))
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    line, area, pen_down = [], [], False
    for i, v in enumerate(values):
        if v is None:
            pen_down = False
            continue
        x, y = i * step, height - 2 - (v - low) / span * (height - 4)
        line.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        area.append(f"{x:.1f},{y:.1f}")
        pen_down = True
    area_path = f"M0,{height} L" + " L".join(area) + f" L{width},{height} Z" if area else ""
    return Sparkline(" ".join(line), area_path, width, height, known[-1], min(known), max(known))


def downsample(
    values: list[float | None], points: int = 96, pick: Callable[[list[float]], float] = max
) -> list[float | None]:
    """One value for each of `points` equal runs: the worst of the run (`max` for counts,
    `min` for ratios), so a short outage or spike stays visible; gaps stay gaps."""
    if len(values) <= points:
        return values
    size = len(values) / points
    out: list[float | None] = []
    for i in range(points):
        run = [v for v in values[int(i * size) : int((i + 1) * size)] if v is not None]
        out.append(pick(run) if run else None)
    return out
