"""The lease-session cryptography of PROTOCOL.md: X25519, HKDF-SHA256, and AES-256-GCM
envelopes with vaultd's associated data. Plaintext that the daemon sends is decrypted
straight into a ``bytearray`` the caller can wipe; nothing here keeps a copy."""

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT = b"vaultd session v1"
FORMAT_V1 = 0x01
SESSION_KEY_VERSION = 0
PURPOSE_SESSION = 7
TO_DAEMON = 1
TO_CLIENT = 2
HEADER_LEN = 5
NONCE_LEN = 12
TAG_LEN = 16


def lp(data: bytes) -> bytes:
    """A 32-bit big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def transcript(client_public: bytes, server_public: bytes, identity: str, session_id: str) -> bytes:
    return SALT + lp(client_public) + lp(server_public) + lp(identity.encode()) + lp(session_id.encode())


def derive_session_key(shared: bytes, transcript_bytes: bytes) -> bytearray:
    hkdf = HKDF(hashes.SHA256(), 32, SALT, transcript_bytes)
    key = bytearray(32)
    if hasattr(hkdf, "derive_into"):  # cryptography 46 and later: no bytes copy of the key
        hkdf.derive_into(shared, key)
    else:
        key[:] = hkdf.derive(shared)
    return key


@dataclass(frozen=True)
class Aad:
    """Where a sealed message belongs (PROTOCOL.md, section 4)."""

    operation: str
    direction: int
    tenant: str = ""
    environment: str = ""
    name: str = ""
    version: int = 0
    context: str = ""


def binding(session_id: str, aad: Aad) -> bytes:
    return lp(session_id.encode()) + bytes([aad.direction]) + lp(aad.operation.encode()) + lp(aad.context.encode())


def header() -> bytes:
    return bytes([FORMAT_V1]) + struct.pack(">I", SESSION_KEY_VERSION)


def associated_data(session_id: str, aad: Aad) -> bytes:
    return (
        b"vaultd.aad"
        + header()
        + bytes([PURPOSE_SESSION])
        + lp(aad.tenant.encode())
        + lp(aad.environment.encode())
        + lp(aad.name.encode())
        + struct.pack(">Q", aad.version)
        + lp(binding(session_id, aad))
    )


class SessionKey:
    """A session's AES-256-GCM key. ``wipe()`` overwrites the key bytes this object
    holds; the cryptography library's own copy lives until garbage collection."""

    def __init__(self, key: bytearray, session_id: str):
        self._key = key
        self.session_id = session_id

    def seal(self, aad: Aad, plaintext, nonce: bytes = None) -> bytes:
        """An envelope of ``plaintext`` (bytes-like) for the daemon. ``nonce`` is for
        test vectors only: every real envelope takes 12 fresh random bytes."""
        nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
        # The key and plaintext are passed as they are: a bytes() copy could not be wiped.
        sealed = AESGCM(self._key).encrypt(nonce, plaintext, associated_data(self.session_id, aad))
        return header() + nonce + sealed

    def open(self, aad: Aad, envelope: bytes) -> bytearray:
        """Opens an envelope from the daemon into a new ``bytearray``; raises
        ``ValueError`` if it is malformed or does not open with this session and
        associated data (the buffer is wiped first)."""
        if len(envelope) < HEADER_LEN + NONCE_LEN + TAG_LEN or envelope[:HEADER_LEN] != header():
            raise ValueError("not a session envelope")
        nonce = envelope[HEADER_LEN : HEADER_LEN + NONCE_LEN]
        ciphertext = envelope[HEADER_LEN + NONCE_LEN : -TAG_LEN]
        tag = envelope[-TAG_LEN:]
        decryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(associated_data(self.session_id, aad))
        out = bytearray(len(ciphertext) + 15)  # update_into wants block-size slack
        try:
            written = decryptor.update_into(ciphertext, out)
            decryptor.finalize()
        except InvalidTag:
            wipe(out)
            raise ValueError("the envelope does not open with this session") from None
        del out[written:]
        return out

    def wipe(self):
        wipe(self._key)


def wipe(buffer: bytearray):
    """Overwrites a buffer with zeros, in place."""
    for i in range(len(buffer)):
        buffer[i] = 0


class Offer:
    """The client's ephemeral half of a session exchange."""

    def __init__(self, private: X25519PrivateKey = None):
        self._private = private or X25519PrivateKey.generate()

    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def agree(self, server_public: bytes, identity: str, session_id: str) -> SessionKey:
        """Completes the exchange (PROTOCOL.md, section 2)."""
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(server_public))
        info = transcript(self.public_key(), server_public, identity, session_id)
        return SessionKey(derive_session_key(shared, info), session_id)
