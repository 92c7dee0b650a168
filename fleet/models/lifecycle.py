"""The shape every status lifecycle here shares: a table of the moves a row's `status`
may make, each applied as one conditional UPDATE (Sentry monitors' rule: a write that
finds the row no longer in a source status changes nothing, and the caller learns it)."""

from dataclasses import dataclass
from typing import TypeVar

from django.db import models

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class Transition:
    """A move a row's status may make: from any of `sources` to `target`, made by `by`."""

    name: str
    sources: frozenset[str]
    target: str
    by: str


class StatusQuerySet(models.QuerySet[M]):
    def transition(self, move: Transition, **fields: object) -> int:
        """Apply `move` to the rows whose status allows it, as one UPDATE (with `fields`
        besides); returns how many moved. Zero means none could: another write got there
        first, and the caller must not act as if it had."""
        return self.filter(status__in=move.sources).update(status=move.target, **fields)


def allowed_pairs(transitions: tuple[Transition, ...]) -> set[tuple[str, str]]:
    """Every (from, to) the table allows, for tests and documentation."""
    return {(source, t.target) for t in transitions for source in t.sources}
