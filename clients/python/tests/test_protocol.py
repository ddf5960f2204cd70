"""PROTOCOL.md's test vectors, from its own text: X25519 from the RFC 7748 keys, the
transcript, the session key, and each vector's binding, associated data and exact
envelope bytes."""

import pathlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from vaultd import _crypto
from vaultd._crypto import TO_CLIENT, TO_DAEMON, Aad

PROTOCOL = pathlib.Path(__file__).resolve().parents[3] / "PROTOCOL.md"

CASES = {
    "lease": Aad("lease", TO_CLIENT, "acme", "live", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
    "transit_encrypt": Aad("transit.encrypt", TO_DAEMON, "acme", "test", version=2),
    "verify_api_key": Aad("apikeys.verify", TO_DAEMON, environment="live"),
}


def vectors() -> dict:
    block = PROTOCOL.read_text().split("```text vectors\n", 1)[1].split("```", 1)[0]
    return dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)


def test_the_vectors_derive_from_their_inputs():
    v = vectors()
    h = bytes.fromhex
    client = _crypto.Offer(X25519PrivateKey.from_private_bytes(h(v["client_private"])))
    server = X25519PrivateKey.from_private_bytes(h(v["server_private"]))
    assert client.public_key() == h(v["client_public"])
    server_public = _crypto.Offer(server).public_key()
    assert server_public == h(v["server_public"])
    assert server.exchange(client._private.public_key()) == h(v["shared_secret"])
    info = _crypto.transcript(client.public_key(), server_public, v["identity"], v["session_id"])
    assert info == h(v["transcript"])
    key = client.agree(server_public, v["identity"], v["session_id"])
    assert bytes(key._key) == h(v["session_key"])
    for name, aad in CASES.items():
        at = lambda field: h(v[f"{name}.{field}"])  # noqa: E731
        assert _crypto.binding(v["session_id"], aad) == at("binding"), name
        assert _crypto.associated_data(v["session_id"], aad) == at("aad"), name
        assert key.seal(aad, at("plaintext"), nonce=at("nonce")) == at("envelope"), name
        assert key.open(aad, at("envelope")) == bytearray(at("plaintext")), name


def test_an_envelope_opens_only_where_it_belongs():
    v = vectors()
    key = _crypto.SessionKey(bytearray(bytes.fromhex(v["session_key"])), v["session_id"])
    envelope = bytes.fromhex(v["lease.envelope"])
    lease = CASES["lease"]
    for moved in [
        Aad("lease", TO_CLIENT, "acme", "live", "byok/openai", 4, "l-7c2e9b4d1a6f3e08"),
        Aad("lease", TO_DAEMON, "acme", "live", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
        Aad("lease", TO_CLIENT, "acme", "test", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
        Aad("lease", TO_CLIENT, "globex", "live", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
        Aad("put-secret", TO_CLIENT, "acme", "live", "byok/openai", 3, "l-7c2e9b4d1a6f3e08"),
    ]:
        try:
            key.open(moved, envelope)
        except ValueError:
            continue
        raise AssertionError(f"opened as {moved}")
    other = _crypto.SessionKey(bytearray(bytes.fromhex(v["session_key"])), "s-another")
    for k, e in [(other, envelope), (key, envelope[:-1] + bytes([envelope[-1] ^ 1])), (key, envelope[:20])]:
        try:
            k.open(lease, e)
        except ValueError:
            continue
        raise AssertionError("a moved or damaged envelope opened")
    assert key.open(lease, envelope) == b"sk-test-canary"
    buffer = key.open(lease, envelope)
    _crypto.wipe(buffer)
    assert buffer == bytearray(len(b"sk-test-canary"))
