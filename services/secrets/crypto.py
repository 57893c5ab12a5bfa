"""Envelope encryption with AES-256-GCM.

Each secret version gets its own random data key; the value is sealed with it, with the version's
location as associated data (a ciphertext moved to another path or version no longer opens). The data
key is sealed with a master key named by id, so rotating the master key only rewraps data keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class KeyringError(Exception):
    pass


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes  # nonce + AES-GCM output of the value
    wrapped_key: bytes  # nonce + AES-GCM output of the data key
    key_id: str


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


class Keyring:
    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyringError(f"active key {active!r} is not in the keyring ({', '.join(keys)})")
        self.keys = keys
        self.active = active

    def _key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyringError(f"master key {key_id!r} is no longer configured") from None

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        return Sealed(
            ciphertext=_seal(data_key, plaintext, aad),
            wrapped_key=_seal(self._key(self.active), data_key, self.active.encode()),
            key_id=self.active,
        )

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        try:
            data_key = _open(self._key(sealed.key_id), sealed.wrapped_key, sealed.key_id.encode())
            return _open(data_key, sealed.ciphertext, aad)
        except InvalidTag:
            raise KeyringError("ciphertext does not verify under its key and location") from None

    def rewrap(self, sealed: Sealed) -> Sealed:
        """The same data key, now wrapped with the active master key."""
        data_key = _open(self._key(sealed.key_id), sealed.wrapped_key, sealed.key_id.encode())
        return Sealed(
            sealed.ciphertext, _seal(self._key(self.active), data_key, self.active.encode()), self.active
        )
