"""Labels (`key=value`) on agents, tokens and jobs: what they may look like, how operators
write them ("gpu=a100, os=linux"), and when an agent has what a job requires. A job's
required labels must all be among the agent's, with the same values; the claim checks the
same in SQL (fleet/services/jobs.py)."""

import re

from fleet import policy

# Keys and values are short, printable and free of spaces, quotes and NUL, so they are safe
# in a JSON path (the SQLite claim) and read the same everywhere.
KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
VALUE = re.compile(r"[A-Za-z0-9._:/+-]{0,63}")


def labels_check(labels: object) -> dict[str, str]:
    """The labels if they are well formed, else ValueError saying what is wrong."""
    if not isinstance(labels, dict):
        raise ValueError("labels are an object of key: value strings")
    if len(labels) > policy.LABELS_MAX:
        raise ValueError(f"at most {policy.LABELS_MAX} labels, not {len(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValueError(
                f"label key {str(key)[:40]!r}: 1 to 63 letters, digits, '.', '_', '/' or '-', "
                "starting and ending with a letter or digit"
            )
        if not isinstance(value, str) or not VALUE.fullmatch(value):
            raise ValueError(
                f"label {key}'s value {str(value)[:40]!r}: up to 63 letters, digits or "
                "'._:/+-', no spaces"
            )
    return dict(sorted(labels.items()))


def labels_parse(text: str) -> dict[str, str]:
    """ "gpu=a100, os=linux" (commas, spaces or new lines between them; a bare key means an
    empty value) as labels; ValueError when one is malformed."""
    labels: dict[str, str] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if item:
            key, _, value = item.partition("=")
            labels[key] = value
    return labels_check(labels)


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def labels_satisfy(required: dict[str, str], have: dict[str, str]) -> bool:
    """The agent (`have`) has every label the job requires, with its value."""
    return all(have.get(key) == value for key, value in required.items())
