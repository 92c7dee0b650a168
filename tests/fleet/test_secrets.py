import pytest

from fleet.secrets import SecretKind, secret_is_well_formed, secret_matches, secret_mint


@pytest.mark.parametrize("kind", list(SecretKind))
def test_minted_secrets_are_well_formed_only_for_their_kind(kind):
    minted = secret_mint(kind)
    assert secret_is_well_formed(minted.plaintext, kind)
    assert secret_matches(minted.plaintext, minted.digest)
    assert minted.plaintext.startswith(minted.display_prefix)
    assert len(minted.plaintext) - len(kind.value) - 6 == 32  # ~190 random bits
    others = [k for k in SecretKind if k != kind]
    assert not any(secret_is_well_formed(minted.plaintext, k) for k in others)


def test_a_typo_or_truncation_fails_the_checksum():
    plaintext = secret_mint(SecretKind.AGENT_SECRET).plaintext
    i = len(SecretKind.AGENT_SECRET.value) + 5
    typo = plaintext[:i] + ("a" if plaintext[i] != "a" else "b") + plaintext[i + 1 :]
    assert not secret_is_well_formed(typo, SecretKind.AGENT_SECRET)
    assert not secret_is_well_formed(plaintext[:-1], SecretKind.AGENT_SECRET)


@pytest.mark.parametrize("tail", ["ééé", "\x00\x00\x00", "ÄÖÜ", "   "])
def test_non_ascii_or_odd_characters_are_refused_not_crashing(tail):
    plaintext = secret_mint(SecretKind.AGENT_SECRET).plaintext
    assert not secret_is_well_formed(plaintext[: -len(tail)] + tail, SecretKind.AGENT_SECRET)


def test_two_mints_never_collide():
    assert len({secret_mint(SecretKind.API_KEY).plaintext for _ in range(2000)}) == 2000
