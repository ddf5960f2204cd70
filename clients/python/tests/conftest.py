"""A real vaultd for the tests: a PKI made by ``vaultctl pki``, the repository's
example policies plus an operator role, and ``vaultd serve`` on a free port and a
Unix socket. It is initialised and unsealed through the socket by this package's
client with gRPC's default authority (the socket path, percent-encoded)."""

import os
import pathlib
import socket
import subprocess
import time

import pytest

import vaultd
from vaultd._proto.vault.v1 import admin_pb2

REPO = pathlib.Path(__file__).resolve().parents[3]
VAULTD = os.environ.get("VAULTD_BIN", str(REPO / "target" / "testkit-vaultd" / "debug" / "vaultd"))
VAULTCTL = os.environ.get("VAULTCTL_BIN", str(REPO / "target" / "debug" / "vaultctl"))

OPERATOR = "spiffe://billing.example/human/python/operator"
GATEWAY = "spiffe://billing.example/svc/gateway"
WORKER = "spiffe://billing.example/tenant/acme/svc/worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One vaultd process and its files."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.socket = root / "vaultd.sock"
        self.port = free_port()
        self.endpoint = f"https://localhost:{self.port}"
        self.ca = root / "ca" / "ca.pem"
        self.share = None
        self._process = None

    def files(self, name: str):
        """The CA, certificate and key of identity ``name``."""
        return dict(ca=str(self.ca), cert=str(self.root / f"{name}.pem"), key=str(self.root / f"{name}.key"))

    def client(self, name: str, **options) -> vaultd.Client:
        return vaultd.Client(self.endpoint, **self.files(name), **options)

    def vaultctl(self, *args, stdin: bytes = b"", identity: str = "operator") -> bytes:
        files = self.files(identity)
        env = dict(os.environ, VAULTD_ADDR=self.endpoint, VAULTD_CACERT=files["ca"],
                   VAULTD_CLIENT_CERT=files["cert"], VAULTD_CLIENT_KEY=files["key"])
        done = subprocess.run([VAULTCTL, *args], input=stdin, env=env, capture_output=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"vaultctl {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout

    def issue(self, name: str, identity: str):
        self.vaultctl("pki", "issue-client", "--ca-dir", str(self.root / "ca"), "--spiffe-id", identity,
                      "--out", str(self.root / name))

    def setup(self):
        self.vaultctl("pki", "init-ca", "--dir", str(self.root / "ca"), "--name", "python tests CA")
        self.vaultctl("pki", "issue-server", "--ca-dir", str(self.root / "ca"), "--dns", "localhost",
                      "--ip", "127.0.0.1", "--out", str(self.root / "server"))
        for name, identity in [("operator", OPERATOR), ("gateway", GATEWAY), ("worker", WORKER)]:
            self.issue(name, identity)
        policies = self.root / "policies"
        policies.mkdir()
        for policy in (REPO / "policies").glob("*.toml"):
            (policies / policy.name).write_bytes(policy.read_bytes())
        (policies / "python-operator.toml").write_text(
            f'[[role]]\nid = "python-operator"\nidentities = ["{OPERATOR}"]\n'
            'permissions = ["status", "secrets.write", "leases.read", "leases.revoke", '
            '"apikeys.issue", "apikeys.revoke"]\n'
        )
        (self.root / "vaultd.toml").write_text(
            f'node = "python-tests"\n[listen]\ngrpc = "127.0.0.1:{self.port}"\nhttp = "127.0.0.1:0"\n'
            f'socket = "{self.socket}"\n[tls]\ncert = "server.pem"\nkey = "server.key"\n'
            f'client_ca = "ca/ca.pem"\n[storage]\npath = "vault.redb"\n[policy]\ndir = "policies"\n'
            f'[audit]\npath = "audit.jsonl"\n'
        )

    def start(self):
        self._log = open(self.root / "vaultd.log", "ab")
        self._process = subprocess.Popen([VAULTD, "serve", "--config", str(self.root / "vaultd.toml")],
                                         stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"vaultd exited: {(self.root / 'vaultd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    if self.socket.exists():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("vaultd did not start within 30 s")

    def stop(self):
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._log.close()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    for binary in (VAULTD, VAULTCTL):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: build it (cargo build -p vaultd -p vault-cli), or set "
                        "VAULTD_BIN and VAULTCTL_BIN")
    d = Daemon(tmp_path_factory.mktemp("vaultd"))
    d.setup()
    d.start()
    # Through the local socket with gRPC's default authority: nothing overridden.
    with vaultd.Client(f"unix:{d.socket}") as local:
        shares = local.init(1, 1)
        d.share = bytes(shares[0])
        assert local.unseal(shares[0]).state == admin_pb2.SEAL_STATE_UNSEALED
    d.vaultctl("secret", "put", "acme", "byok/openai", "--env", "live", "--kind", "byok", stdin=b"sk-from-python")
    yield d
    d.stop()
