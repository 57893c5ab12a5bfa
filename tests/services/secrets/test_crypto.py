import os

import pytest

from coder.services.secrets.crypto import Keyring, KeyringError


def test_seal_open_rewrap() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = Keyring({"old": old}, "old").seal(b"value", b"where")
    assert b"value" not in sealed.ciphertext
    rotated = Keyring({"old": old, "new": new}, "new")
    rewrapped = rotated.rewrap(sealed)
    assert rewrapped.key_id == "new" and rewrapped.ciphertext == sealed.ciphertext
    assert Keyring({"new": new}, "new").open(rewrapped, b"where") == b"value"


def test_wrong_location_or_missing_key_fails() -> None:
    key = os.urandom(32)
    sealed = Keyring({"k": key}, "k").seal(b"value", b"here")
    with pytest.raises(KeyringError, match="does not verify"):
        Keyring({"k": key}, "k").open(sealed, b"elsewhere")
    with pytest.raises(KeyringError, match="no longer configured"):
        Keyring({"other": key}, "other").open(sealed, b"here")


def test_active_key_must_exist() -> None:
    with pytest.raises(KeyringError):
        Keyring({"a": os.urandom(32)}, "b")
