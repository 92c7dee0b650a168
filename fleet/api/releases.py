"""Release downloads for agents, with their own secret: what a version is (hash, size,
signature) and its artifact, streamed, resumable with `Range`. Releases are global (every
customer's agents run the same builds); an unauthenticated request is refused (401)."""

import re
from collections.abc import Iterator
from typing import IO

from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja import Router

from fleet.api.auth import agent_auth, authed_agent
from fleet.api.schemas import ReleaseOut, SigningKeyOut, errors
from fleet.errors import RangeNotSatisfiable, ReleaseNotFound
from fleet.models import Release
from fleet.selectors import release_artifact_path, release_for_download

router = Router(tags=["releases"])
CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@router.get(
    "/releases/signing-key",
    auth=agent_auth,
    response={200: SigningKeyOut, **errors(401)},
    summary="The public key release signatures verify against",
)
def signing_key(request: HttpRequest) -> SigningKeyOut:
    """An agent pins this key when it activates (unless given one at install) and refuses
    any artifact whose signature does not verify against the key it pinned."""
    authed_agent(request)
    return SigningKeyOut(algorithm="ed25519", public_key=settings.RELEASE_PUBLIC_KEY or None)


@router.get(
    "/releases/{version}",
    auth=agent_auth,
    response={200: ReleaseOut, **errors(401, 404, 422)},
    summary="A release's download: its SHA-256, size, signature and URL",
)
def release_detail(request: HttpRequest, version: str) -> ReleaseOut:
    """404 `release_not_found` for an unknown or yanked version, or one without an
    artifact; 422 for anything that is not a version."""
    release = release_for_download(version)
    return ReleaseOut(
        version=str(release.version),
        channel=release.channel,
        sha256=release.sha256,
        size=release.size or 0,
        signature=release.signature,
        url=release_artifact_path(release.version),
    )


@router.get(
    "/releases/{version}/artifact",
    auth=agent_auth,
    response={200: None, 206: None, **errors(401, 404, 416, 422)},
    summary="A release's artifact, streamed (`Range: bytes=N-` resumes: 206)",
    openapi_extra={
        "responses": {
            "200": {"description": "The whole artifact (application/octet-stream)."},
            "206": {"description": "The requested bytes, with Content-Range."},
        }
    },
)
def release_artifact(request: HttpRequest, version: str) -> HttpResponseBase:
    """The bytes whose SHA-256 and signature the release (and the upgrade order) carry.
    One byte range is served (`bytes=N-`, `bytes=N-M`, `bytes=-N`); a range past the end
    is 416 `range_not_satisfiable` with `Content-Range: bytes */<size>`."""
    release = release_for_download(version)
    size = release.size or 0
    try:
        span = _byte_range(request.headers.get("Range", ""), size)
    except RangeNotSatisfiable as exc:
        refused = JsonResponse(exc.as_body(), status=exc.status)
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    start, end = span or (0, size - 1)
    try:
        file = release.artifact.open("rb")
    except OSError as exc:  # the storage lost it: as good as no artifact
        raise ReleaseNotFound(
            f"Release {release.version}'s artifact is missing from storage.", field="version"
        ) from exc
    response = StreamingHttpResponse(
        _chunks(file, start, end - start + 1),
        status=206 if span else 200,
        content_type="application/octet-stream",
    )
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = f'"{release.sha256}"'
    response["Content-Disposition"] = f'attachment; filename="{_filename(release)}"'
    if span:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


def _filename(release: Release) -> str:
    return release.artifact.name.rsplit("/", 1)[-1]


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of the one range asked for, None for the whole file (no
    header, or another unit, which RFC 9110 lets a server ignore)."""
    header = header.strip()
    if not header or not header.startswith("bytes="):
        return None
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None or (not match[1] and not match[2]):
        raise _unsatisfiable(header, size)
    if not match[1]:  # the last N bytes
        suffix = _position(match[2])
        if suffix == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - suffix), size - 1
    start = _position(match[1])
    end = min(_position(match[2]), size - 1) if match[2] else size - 1
    if start >= size or start > end:
        raise _unsatisfiable(header, size)
    return start, end


def _position(digits: str) -> int:
    """A byte position; one past any artifact's size stands for every longer number (which
    int() would refuse past 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _unsatisfiable(header: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"Range {header[:100]!r} is not within the artifact's {size} bytes.", size=size
    )


def _chunks(file: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    """`length` bytes from `start`, a chunk at a time (memory stays flat)."""
    try:
        file.seek(start)
        left = length
        while left > 0:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        file.close()
