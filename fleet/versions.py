"""Semantic versions (semver.org 2.0) and their database form.

A version is stored as `<key> <text>`. The key is digits only: a fixed-width rank of
major, minor, patch and release-over-prerelease, then the prerelease identifiers in a
prefix-free encoding. Collations compare digit strings digit by digit, and no key is a
prefix of another, so SQL's ORDER BY and < agree with semver precedence (1.10.0 > 1.9.3,
2.0.0-beta.10 > 2.0.0-beta.9) whatever the database's collation; the text after the key
keeps the version as written.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

_SEMVER = re.compile(
    r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_PART_LIMIT = 1_000_000  # major, minor and patch each below a million
_RANK_WIDTH = 19
_NUMERIC_WIDTH = 20  # a numeric prerelease identifier, zero-padded
_MAX_TEXT = 64
_DB_MAX = 800  # a 64-character version's key is at most ~760 characters


class SemVer(str):
    """A version string that compares by semver precedence, not by characters."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...]
    build: str

    def __new__(cls, value: str) -> SemVer:
        if type(value) is cls:
            return value  # already parsed (immutable, like str): nothing to check again
        text = str(value).strip().removeprefix("v")
        match = _SEMVER.match(text)
        if not match or len(text) > _MAX_TEXT:
            raise ValueError(f"{value!r} is not a semantic version like 1.10.0")
        obj = super().__new__(cls, text)
        obj.major, obj.minor, obj.patch = (int(match.group(i)) for i in (1, 2, 3))
        pre = match.group(4)
        obj.prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
        if any(isinstance(p, int) and p >= 10**_NUMERIC_WIDTH for p in obj.prerelease):
            raise ValueError(f"{value!r} has a prerelease number over {_NUMERIC_WIDTH} digits")
        if len(obj.db_value) > _DB_MAX:
            raise ValueError(f"{value!r} has too many prerelease parts")
        obj.build = match.group(5) or ""
        return obj

    @property
    def precedence(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release outranks its prereleases; numeric identifiers sort below alphanumeric.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    @property
    def rank(self) -> int:
        core = (self.major * _PART_LIMIT + self.minor) * _PART_LIMIT + self.patch
        return core * 2 + (0 if self.prerelease else 1)

    @property
    def db_key(self) -> str:
        """Digits that order like semver precedence (see the module docstring)."""
        parts = []
        for identifier in self.prerelease:
            if isinstance(identifier, int):
                parts.append(f"1{identifier:0{_NUMERIC_WIDTH}d}")
            else:  # each character as three digits, "000" ends the identifier
                parts.append("2" + "".join(f"{ord(c):03d}" for c in identifier) + "000")
        prerelease = "".join(parts) + "0" if parts else ""
        return f"{self.rank:0{_RANK_WIDTH}d}{prerelease}"

    @property
    def db_value(self) -> str:
        return f"{self.db_key} {self}"

    def minors_behind(self, other: SemVer) -> int:
        """How many minor versions this one trails `other` (a major counts as many)."""
        if self.major != other.major:
            return 1000 * (other.major - self.major)
        return other.minor - self.minor

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.__eq__(self, other)
        return NotImplemented

    def __hash__(self) -> int:
        return str.__hash__(self)

    # str defines its own character-order comparisons; replace all four.
    def __lt__(self, other: object) -> bool:
        return (
            self.precedence < as_semver(other).precedence
            if isinstance(other, str)
            else NotImplemented
        )

    def __le__(self, other: object) -> bool:
        return (
            self.precedence <= as_semver(other).precedence
            if isinstance(other, str)
            else NotImplemented
        )

    def __gt__(self, other: object) -> bool:
        return (
            self.precedence > as_semver(other).precedence
            if isinstance(other, str)
            else NotImplemented
        )

    def __ge__(self, other: object) -> bool:
        return (
            self.precedence >= as_semver(other).precedence
            if isinstance(other, str)
            else NotImplemented
        )


def as_semver(value: str) -> SemVer:
    return value if isinstance(value, SemVer) else SemVer(value)


def validate_semver(value: str) -> None:
    try:
        as_semver(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_version") from exc


class _SemVerAttribute(DeferredAttribute):
    """Assigning "1.10.0" to a SemVerField stores SemVer("1.10.0"); bad text stays text
    for validation to report."""

    def __set__(self, instance: models.Model, value: Any) -> None:
        if isinstance(value, str) and value and not isinstance(value, SemVer):
            with contextlib.suppress(ValueError):
                value = SemVer(value)
        instance.__dict__[self.field.attname] = value


class SemVerField(models.CharField):
    """A CharField whose values are SemVer and whose SQL ordering is semver precedence."""

    description = "Semantic version"
    descriptor_class = _SemVerAttribute

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "max_length", _DB_MAX
        )  # the longest key of a 64-character version, and it
        super().__init__(*args, **kwargs)
        self.validators.append(validate_semver)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> SemVer | None:
        if value is None:
            return None
        return SemVer(value.rsplit(" ", 1)[1])

    def to_python(self, value: Any) -> SemVer | None:
        if value is None or isinstance(value, SemVer):
            return value
        if value == "":
            return None
        try:
            return SemVer(value)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_version") from exc

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return None
        return as_semver(value).db_value

    def value_to_string(self, obj: models.Model) -> str:
        value = self.value_from_object(obj)
        return "" if value is None else str(value)
