"""The agent's release archive: built reproducibly from this repository with its version
stamped, and unpacked only when every member is safe (nothing written otherwise)."""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import agentina
from agentina.artifact import UnsafeArchive, build_from_source, unpack
from agentina.upgrade import file_digest


def test_a_build_is_reproducible_stamped_and_runs_as_its_version(tmp_path):
    first = build_from_source("1.99.0", tmp_path / "a")
    second = build_from_source("1.99.0", tmp_path / "b")
    assert file_digest(first) == file_digest(second)
    with tarfile.open(first) as tar:
        names = tar.getnames()
    assert "agentina/__main__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    root = unpack(first, tmp_path / "versions" / "1.99.0")
    assert '__version__ = "1.99.0"' in (root / "agentina" / "__init__.py").read_text()
    ran = subprocess.run(
        [sys.executable, "-P", "-m", "agentina", "--version"],
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=Path(agentina.__file__).parent.parent,  # -P: this checkout's agentina is not used
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == "1.99.0"


def test_the_test_only_faults_break_a_release_as_documented(tmp_path):
    smoke = unpack(build_from_source("1.97.0", tmp_path, fault="smoke"), tmp_path / "s")
    assert '__test_fault__ = "smoke"' in (smoke / "agentina" / "__init__.py").read_text()
    crash = unpack(build_from_source("1.96.0", tmp_path, fault="crash"), tmp_path / "c")
    assert "raise ImportError" in (crash / "agentina" / "runner.py").read_text()
    assert "__test_fault__" not in (crash / "agentina" / "__init__.py").read_text()
    with pytest.raises(ValueError, match="fault must be one of"):
        build_from_source("1.95.0", tmp_path, fault="other")
    with pytest.raises(ValueError, match="not a release version"):
        build_from_source("../1.0", tmp_path)


def hostile(tmp_path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        init = tarfile.TarInfo("agentina/__init__.py")
        init.size = 1
        tar.addfile(init, io.BytesIO(b"#"))
        for member in members:
            if member.isreg():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (member("/etc/cron.d/evil"), "absolute path"),
        (member("agentina/../../evil.py"), "climbs out"),
        (member("../evil.py"), "climbs out"),
        (member("agentina/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (member("agentina/hard", tarfile.LNKTYPE, "agentina/__init__.py"), "is a link"),
        (member("agentina/dev", tarfile.CHRTYPE), "not a regular file"),
        (member("agentina/fifo", tarfile.FIFOTYPE), "not a regular file"),
        (member("elsewhere/x.py"), "outside the agentina/ package"),
        (member("agentina/x\\..\\..\\evil"), "unusable name"),
    ],
)
def test_a_hostile_member_refuses_the_whole_archive_and_nothing_is_written(tmp_path, bad, error):
    archive = hostile(tmp_path, bad)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafeArchive, match=error):
        unpack(archive, tmp_path / "versions" / "6.6.6")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil.py").exists()


def test_too_big_no_package_and_not_an_archive_are_refused(tmp_path):
    big = hostile(tmp_path, member("agentina/big.bin"), data=b"0" * 10_000)
    with pytest.raises(UnsafeArchive, match="unpacks to more than"):
        unpack(big, tmp_path / "v1", max_bytes=5_000)
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(UnsafeArchive, match=r"no agentina/__init__\.py"):
        unpack(empty, tmp_path / "v2")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(UnsafeArchive, match="not a readable"):
        unpack(junk, tmp_path / "v3")
    assert not any((tmp_path / name).exists() for name in ("v1", "v2", "v3"))


def test_unpack_never_replaces_a_directory(tmp_path):
    archive = build_from_source("1.99.0", tmp_path)
    (tmp_path / "v").mkdir()
    with pytest.raises(FileExistsError):
        unpack(archive, tmp_path / "v")
