"""The client against a real vaultd over real mutual TLS (and its local socket)."""

import shutil
import time

import pytest

import vaultd
from vaultd._proto.vault.v1 import admin_pb2


def eventually(check, within=1.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_the_local_socket_serves_a_default_grpc_client(daemon):
    # grpc-core sends the socket path, percent-encoded, as :authority; nothing here
    # overrides it.
    with vaultd.Client(f"unix:{daemon.socket}") as local:
        status = local.status()
        assert status.state == admin_pb2.SEAL_STATE_UNSEALED
        with pytest.raises(vaultd.PermissionDenied):
            local.lease("acme", "live", "byok/openai")


def test_a_lease_is_cached_renewed_and_dropped_when_revoked_elsewhere(daemon):
    with daemon.client("gateway", lease_ttl=60) as client:
        with client.lease("acme", "live", "byok/openai") as lease:
            assert bytes(lease.value) == b"sk-from-python"
            assert (lease.tenant, lease.version) == ("acme", 1)
            first = lease.lease_id
        # Wiped on leaving the block, and the cache still holds its own copy.
        assert lease._value is None
        assert client.cached() == 1
        again = client.lease("acme", "live", "byok/openai")
        assert again.lease_id == first
        before = again.expires
        assert client.renew(again, 120) > before
        # An admin revocation through another client reaches this one's watch.
        daemon.vaultctl("lease", "revoke", "--tenant", "acme")
        assert eventually(lambda: client.cached() == 0), "the revocation did not empty the cache"
        with pytest.raises(vaultd.NotFound):
            client.renew(again)
        fresh = client.lease("acme", "live", "byok/openai")
        assert fresh.lease_id != first
        client.revoke(fresh)
        assert client.cached() == 0
        with pytest.raises(vaultd.VaultError):
            fresh.value


def test_transit_envelopes_are_interchangeable_with_the_rust_client(daemon):
    with daemon.client("worker") as worker:
        envelope = worker.encrypt("acme", "live", b"card 4242")
        assert bytes(worker.decrypt("acme", "live", envelope)) == b"card 4242"
        # The Rust client (vaultctl) opens the Python client's envelope, and the other way.
        opened = daemon.vaultctl("transit", "--tenant", "acme", "--env", "live", "decrypt",
                                 stdin=envelope.hex().encode(), identity="worker")
        assert opened == b"card 4242"
        rust = daemon.vaultctl("transit", "--tenant", "acme", "--env", "live", "encrypt",
                               stdin=b"from rust", identity="worker")
        assert bytes(worker.decrypt("acme", "live", bytes.fromhex(rust.decode().strip()))) == b"from rust"
        # Batches: items succeed or fail on their own, in order.
        envelopes = worker.encrypt_batch("acme", "live", [b"one", b"two", b""])
        assert all(isinstance(e, bytes) for e in envelopes)
        opened = worker.decrypt_batch("acme", "live", [envelopes[1], b"not an envelope", envelopes[0]])
        assert bytes(opened[0]) == b"two" and bytes(opened[2]) == b"one"
        assert isinstance(opened[1], vaultd.VaultError)
        # A test envelope does not open as live, and another tenant is not this one's.
        with pytest.raises(vaultd.VaultError):
            worker.decrypt("acme", "test", envelope)
        with pytest.raises(vaultd.PermissionDenied):
            worker.encrypt("globex", "live", b"x")


def test_api_keys_verify_and_refusals_are_typed(daemon):
    key = daemon.vaultctl("apikey", "issue", "--tenant", "acme", "--env", "live", "--scope", "usage:read").strip()
    with daemon.client("gateway") as gateway:
        verified = gateway.verify_api_key(key.decode(), "live", scope="usage:read")
        assert verified.tenant == "acme" and list(verified.scopes) == ["usage:read"]
        with pytest.raises(vaultd.ApiKeyEnvironment):
            gateway.verify_api_key(key, "test")
        with pytest.raises(vaultd.ApiKeyScope):
            gateway.verify_api_key(key, "live", scope="billing:write")
        with pytest.raises(vaultd.ApiKeyInvalid):
            gateway.verify_api_key(b"vk_live_not_a_key", "live")
        daemon.vaultctl("apikey", "revoke", verified.key_id)
        with pytest.raises(vaultd.ApiKeyRevoked) as refused:
            gateway.verify_api_key(key, "live")
        assert refused.value.reason == "api-key-revoked"
    with daemon.client("worker") as worker:
        with pytest.raises(vaultd.PermissionDenied):
            worker.verify_api_key(key, "live")


def test_changed_certificate_files_are_read_again(daemon, tmp_path):
    files = daemon.files("worker")
    for name in ("cert", "key"):
        shutil.copy(files[name], tmp_path / name)
    client = vaultd.Client(daemon.endpoint, ca=files["ca"], cert=str(tmp_path / "cert"),
                           key=str(tmp_path / "key"), reload_interval=0.0)
    with client:
        with pytest.raises(vaultd.PermissionDenied):
            client.lease("globex", "live", "byok/openai")
        # The files now hold the gateway's certificate: the next call is the gateway's.
        gateway = daemon.files("gateway")
        time.sleep(0.01)
        shutil.copy(gateway["cert"], tmp_path / "cert")
        shutil.copy(gateway["key"], tmp_path / "key")
        with client.lease("acme", "live", "byok/openai") as lease:
            assert bytes(lease.value) == b"sk-from-python"


def test_sealed_is_typed_and_sessions_reopen_after_an_unseal(daemon):
    with daemon.client("gateway", watch=False) as gateway:
        gateway.lease("acme", "live", "byok/openai").wipe()
        with vaultd.Client(f"unix:{daemon.socket}") as local:
            local.seal()
            with pytest.raises(vaultd.Sealed) as sealed:
                gateway.lease("acme", "live", "byok/openai")
            assert sealed.value.reason == "sealed"
            local.unseal(daemon.share)
        # The seal wiped the gateway's session; the client opens a new one by itself.
        with gateway.lease("acme", "live", "byok/openai") as lease:
            assert bytes(lease.value) == b"sk-from-python"


def test_limits_are_typed_with_when_to_retry(daemon):
    limited = daemon.vaultctl("apikey", "issue", "--tenant", "acme", "--env", "live",
                              "--burst", "1", "--per-minute", "0", "--per-day", "0").strip()
    quota = daemon.vaultctl("apikey", "issue", "--tenant", "acme", "--env", "live", "--daily-quota", "2").strip()
    with daemon.client("gateway") as gateway:
        gateway.verify_api_key(limited, "live")
        with pytest.raises(vaultd.RateLimited) as refused:
            gateway.verify_api_key(limited, "live")
        assert refused.value.retry_after >= 1
        assert (refused.value.scope, refused.value.window) == ("api_key", "burst")
        assert gateway.verify_api_key(quota, "live", cost=2).quota_remaining == 0
        with pytest.raises(vaultd.QuotaExceeded) as spent:
            gateway.verify_api_key(quota, "live")
        assert spent.value.retry_after >= 1 and spent.value.window == "quota"
