"""Release signatures: Ed25519 over the statement that binds version, SHA-256 and size."""

import base64
import hashlib
import stat

import pytest

from agentina.signing import (
    SignatureInvalid,
    generate_keypair,
    load_private_key,
    public_key_b64,
    release_statement,
    save_private_key,
    sign_release,
    verify_release,
)

SHA = hashlib.sha256(b"artifact").hexdigest()


def test_the_statement_names_version_hash_and_size():
    assert release_statement("1.99.0", SHA, 1234) == (
        b"agentina-release v1\nversion=1.99.0\nsha256=" + SHA.encode() + b"\nsize=1234\n"
    )


@pytest.mark.parametrize(
    ("version", "sha256", "size"),
    [
        ("1.99.0\nsize=1", SHA, 1),  # a newline would forge another line
        ("", SHA, 1),
        ("../1.0.0", SHA, 1),
        ("1.99.0", SHA.upper(), 1),
        ("1.99.0", SHA[:-1], 1),
        ("1.99.0", SHA, -1),
        ("1.99.0", SHA, True),
        ("1.99.0", SHA, 1.5),
    ],
)
def test_a_statement_of_anything_else_is_refused(version, sha256, size):
    with pytest.raises(SignatureInvalid):
        release_statement(version, sha256, size)


def test_a_signature_verifies_for_exactly_what_it_signed():
    private, public = generate_keypair()
    signature = sign_release(private, "1.99.0", SHA, 1234)
    assert len(signature) == 88
    verify_release(public, "1.99.0", SHA, 1234, signature)
    for version, sha256, size in [("1.99.1", SHA, 1234), ("1.99.0", "0" * 64, 1234)]:
        with pytest.raises(SignatureInvalid, match="does not match"):
            verify_release(public, version, sha256, size, signature)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_release(public, "1.99.0", SHA, 1235, signature)
    _, stranger = generate_keypair()
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_release(stranger, "1.99.0", SHA, 1234, signature)


@pytest.mark.parametrize(
    ("signature", "error"),
    [
        (base64.b64encode(b"\0" * 63).decode(), "64 bytes, got 63"),
        (base64.b64encode(b"\0" * 65).decode(), "64 bytes, got 65"),
        ("not base64!", "not valid base64"),
        ("", "64 bytes, got 0"),
    ],
)
def test_a_signature_of_the_wrong_length_or_form_is_refused(signature, error):
    _, public = generate_keypair()
    with pytest.raises(SignatureInvalid, match=error):
        verify_release(public, "1.99.0", SHA, 1, signature)


def test_a_public_key_of_the_wrong_length_is_refused():
    private, _ = generate_keypair()
    signature = sign_release(private, "1.99.0", SHA, 1)
    with pytest.raises(SignatureInvalid, match="public key must be 32 bytes"):
        verify_release(base64.b64encode(b"k" * 31).decode(), "1.99.0", SHA, 1, signature)


def test_the_private_key_file_is_the_owners_only_and_never_overwritten(tmp_path):
    private, public = generate_keypair()
    path = save_private_key(private, tmp_path / "release.pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_b64(load_private_key(path)) == public
    with pytest.raises(FileExistsError):
        save_private_key(generate_keypair()[0], path)
    assert public_key_b64(load_private_key(path)) == public
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(SignatureInvalid):
        load_private_key(tmp_path / "junk.pem")
