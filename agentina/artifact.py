"""Release artifacts of the reference agent: a `.tar.gz` holding the top-level `agentina/`
package, run as `python -m agentina` with PYTHONPATH set to the directory it unpacks into.

`build_from_source` stamps `__version__` and writes a reproducible archive (sorted members,
fixed times and owners), so the same source and version give the same SHA-256. `unpack`
checks every member before it writes anything: only regular files and directories under
the destination, no absolute paths, no `..`, no links or devices, a bounded total size.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from agentina.signing import VERSION

PACKAGE = "agentina"
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
MAX_MEMBERS = 2000
_VERSION_LINE = re.compile(r'^__version__ = ".*"$', re.MULTILINE)
# Test-only hook (documented in tests/test_upgrade_end_to_end.py) for broken releases:
# "smoke" stamps `__test_fault__ = "smoke"` into __init__.py, which makes the smoke check's
# self-test fail (agentina/upgrade.py); "crash" makes `agentina.runner` raise ImportError,
# so the release cannot even start.
FAULTS = ("smoke", "crash")


class UnsafeArchive(ValueError):
    """The archive holds a member that would land outside its directory, a link, a device,
    or more than the agent accepts; nothing was written."""


def source_dir() -> Path:
    """The `agentina/` package directory of the running code."""
    return Path(__file__).resolve().parent


def build_from_source(version: str, dest_dir: str | Path, *, fault: str | None = None) -> Path:
    """Write `agentina-<version>.tar.gz` into `dest_dir` from the running agent's source,
    with `__version__` stamped to `version`. `fault` is a test-only hook (see FAULTS)."""
    if not VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} is not a release version")
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}")
    root = source_dir()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    suffix = f"-{fault}" if fault else ""
    archive = dest / f"agentina-{version}{suffix}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, PACKAGE)
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo"):
                continue
            name = f"{PACKAGE}/{relative.as_posix()}"
            if path.is_dir() and not path.is_symlink():
                _add_dir(tar, name)
            elif path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if relative.as_posix() == "__init__.py":
                    data = _stamp(data.decode(), version, fault).encode()
                elif relative.as_posix() == "runner.py" and fault == "crash":
                    data += b'\nraise ImportError("test-only: a deliberately broken release")\n'
                _add_file(tar, name, data)
    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())
    return archive


def _stamp(source: str, version: str, fault: str | None) -> str:
    stamped, count = _VERSION_LINE.subn(f'__version__ = "{version}"', source)
    if count != 1:
        raise ValueError("agentina/__init__.py has no single __version__ line to stamp")
    if fault == "smoke":
        stamped += '__test_fault__ = "smoke"  # test-only: its self-test fails\n'
    return stamped


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    name = member.name
    path = PurePosixPath(name)
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"member {name!r} has an unusable name")
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"member {name!r} climbs out with '..'")
    if member.issym() or member.islnk():
        raise UnsafeArchive(f"member {name!r} is a link")
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchive(f"member {name!r} is not a regular file or directory")
    if path.parts[0] != PACKAGE:
        raise UnsafeArchive(f"member {name!r} is outside the {PACKAGE}/ package")
    return path


def check(archive: str | Path, max_bytes: int = MAX_UNPACKED_BYTES) -> list[tarfile.TarInfo]:
    """Every member, checked (see UnsafeArchive); raises before anything is written."""
    total = 0
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = []
            for member in tar:
                _check_member(member)
                total += max(member.size, 0)
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise UnsafeArchive(f"more than {MAX_MEMBERS} members")
                if total > max_bytes:
                    raise UnsafeArchive(f"unpacks to more than {max_bytes} bytes")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnsafeArchive(f"not a readable .tar.gz: {exc}") from exc
    if not any(PurePosixPath(m.name) == PurePosixPath(PACKAGE, "__init__.py") for m in members):
        raise UnsafeArchive(f"no {PACKAGE}/__init__.py in the archive")
    return members


def unpack(archive: str | Path, dest: str | Path, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Unpack into `dest` (which must not exist yet): checked first, written into a
    temporary sibling, then renamed into place, so `dest` is either whole or absent."""
    target = Path(dest)
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    check(archive, max_bytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                relative = _check_member(member)
                out = staging.joinpath(*relative.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise UnsafeArchive(f"member {member.name!r} has no data")
                try:
                    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise UnsafeArchive(f"member {member.name!r} is there twice") from exc
                with os.fdopen(fd, "wb") as handle, source:
                    shutil.copyfileobj(source, handle)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
