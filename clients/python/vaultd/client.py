"""The client: mutual TLS from files (re-read when they change), lease sessions opened
and renewed transparently, failover between endpoints, a lease cache emptied by the
revocation watch, transit, API-key verification and the seal lifecycle."""

import os
import threading
import time
from dataclasses import dataclass, field

import grpc
from cryptography import x509

from . import _crypto
from ._crypto import TO_CLIENT, TO_DAEMON, Aad
from .errors import Unavailable, UnknownSession, VaultError, from_rpc_error

from ._proto.vault.v1 import admin_pb2, admin_pb2_grpc, apikeys_pb2, broker_pb2, broker_pb2_grpc, common_pb2

ENVIRONMENTS = {"live": common_pb2.ENVIRONMENT_LIVE, "test": common_pb2.ENVIRONMENT_TEST}

#: A cached lease is handed out only while it has at least this long left (seconds).
CACHE_MARGIN = 5.0


def _environment(name: str) -> int:
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise ValueError(f"environment must be 'live' or 'test', not {name!r}") from None


class Lease:
    """A leased secret value. ``value`` is a ``bytearray`` this object owns: ``wipe()``
    (or leaving a ``with`` block) overwrites it with zeros. Python cannot promise more:
    a ``bytes`` copy made from it, or a string decoded from it, is not wiped."""

    def __init__(self, lease_id, tenant, environment, name, version, expires, renewable_until, value, node):
        self.lease_id = lease_id
        self.tenant = tenant
        self.environment = environment
        self.name = name
        self.version = version
        self.expires = expires
        self.renewable_until = renewable_until
        self._value = value
        self._node = node

    @property
    def value(self) -> bytearray:
        if self._value is None:
            raise VaultError("the lease's value was wiped")
        return self._value

    def wipe(self):
        if self._value is not None:
            _crypto.wipe(self._value)
            self._value = None

    def _copy(self) -> "Lease":
        return Lease(
            self.lease_id, self.tenant, self.environment, self.name, self.version,
            self.expires, self.renewable_until, bytearray(self.value), self._node,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.wipe()

    def __repr__(self):
        return f"Lease({self.lease_id!r}, {self.tenant}/{self.environment}/{self.name} v{self.version})"

    def __del__(self):
        self.wipe()


@dataclass
class _Session:
    key: _crypto.SessionKey
    renew_at: float


@dataclass
class _Node:
    """One endpoint: its channel, stubs and lease session."""

    target: str
    channel: grpc.Channel = None
    broker: broker_pb2_grpc.BrokerStub = None
    admin: admin_pb2_grpc.AdminStub = None
    session: _Session = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    watching: threading.Event = field(default_factory=threading.Event)
    watch: threading.Thread = None
    stream: object = None


class _Files:
    """The TLS files, and whether they changed since they were read."""

    def __init__(self, ca, cert, key):
        self.paths = (ca, cert, key)
        self.stamp = self._stamp()

    def _stamp(self):
        stats = [os.stat(p) for p in self.paths]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def read(self):
        self.stamp = self._stamp()
        ca, cert, key = (open(p, "rb").read() for p in self.paths)
        return ca, cert, key

    def changed(self) -> bool:
        try:
            return self._stamp() != self.stamp
        except OSError:
            return False  # mid-replacement: keep what works, look again later


def identity_of(cert_pem: bytes) -> str:
    """The identity vaultd sees for this certificate: its SPIFFE ID, or ``dns:`` and its
    DNS name when it has no URI SAN."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise VaultError("the client certificate has no subject alternative name") from None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if uris:
        return uris[0]
    dns = names.get_values_for_type(x509.DNSName)
    if dns:
        return "dns:" + dns[0]
    raise VaultError("the client certificate names no SPIFFE ID or DNS name")


class Client:
    """A vaultd client. ``endpoints`` are ``https://host:port`` (mutual TLS with ``ca``,
    ``cert`` and ``key``, PEM files) or ``unix:/path/to/vaultd.sock`` (status, init,
    unseal and seal only); the first is used, the next on ``UNAVAILABLE``.

    With ``watch`` (the default), leases are cached until they near their end and
    dropped the moment vaultd revokes them; without it nothing is cached."""

    def __init__(self, endpoints, ca=None, cert=None, key=None, *, watch=True, timeout=30.0,
                 reload_interval=10.0, lease_ttl=0):
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("no endpoint")
        self._nodes = [_Node(target=e) for e in endpoints]
        tls = [e for e in endpoints if e.startswith("https://")]
        bad = [e for e in endpoints if not e.startswith(("https://", "unix:"))]
        if bad:
            raise ValueError(f"{bad[0]!r}: use https://host:port or unix:/path")
        if tls and not (ca and cert and key):
            raise ValueError("an https endpoint needs ca, cert and key files")
        self._files = _Files(ca, cert, key) if tls else None
        self._credentials = None
        self._identity = None
        self._load_tls()
        self._watch = watch
        self._timeout = timeout
        self._reload_interval = reload_interval
        self._checked = time.monotonic()
        self._lease_ttl = lease_ttl
        self._current = 0
        self._lock = threading.Lock()
        self._cache = {}
        self._closed = threading.Event()

    # -- connections -------------------------------------------------------------------

    def _load_tls(self):
        if self._files is None:
            return
        ca, cert, key = self._files.read()
        self._identity = identity_of(cert)
        self._credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def _reload_if_changed(self):
        now = time.monotonic()
        if self._files is None or now - self._checked < self._reload_interval:
            return
        self._checked = now
        if not self._files.changed():
            return
        self._load_tls()
        for node in self._nodes:
            if node.target.startswith("https://"):
                self._disconnect(node)

    def _disconnect(self, node: _Node):
        with node.lock:
            if node.stream is not None:
                node.stream.cancel()
            if node.channel is not None:
                node.channel.close()
            if node.session is not None:
                node.session.key.wipe()
            node.channel = node.session = None

    def _connected(self, node: _Node) -> _Node:
        with node.lock:
            if node.channel is None:
                if node.target.startswith("unix:"):
                    # The default authority: grpc-core sends the socket path, which
                    # vaultd accepts.
                    node.channel = grpc.insecure_channel(node.target)
                else:
                    node.channel = grpc.secure_channel(node.target[len("https://"):], self._credentials)
                node.broker = broker_pb2_grpc.BrokerStub(node.channel)
                node.admin = admin_pb2_grpc.AdminStub(node.channel)
            return node

    def _identity_on(self, node: _Node) -> str:
        if node.target.startswith("unix:"):
            return f"local:uid={os.getuid()}"
        return self._identity

    def _session(self, node: _Node) -> _crypto.SessionKey:
        """The node's session, opened (or replaced ahead of its end) as needed."""
        with node.lock:
            session = node.session
        if session is not None and time.time() < session.renew_at:
            return session.key
        offer = _crypto.Offer()
        answer = node.broker.OpenSession(
            broker_pb2.OpenSessionRequest(client_public_key=offer.public_key()), timeout=self._timeout
        )
        key = offer.agree(answer.server_public_key, self._identity_on(node), answer.session_id)
        lifetime = answer.expires_unix_ms / 1000.0 - time.time()
        fresh = _Session(key=key, renew_at=time.time() + max(lifetime * 0.9, 0.0))
        with node.lock:
            if node.session is not None:
                node.session.key.wipe()
            node.session = fresh
        return key

    def _forget_session(self, node: _Node):
        with node.lock:
            if node.session is not None:
                node.session.key.wipe()
            node.session = None

    def _call(self, fn, *, idempotent=True, session=False, pinned=None):
        """Runs ``fn(node, session_key)`` on the current endpoint, opening a new session
        once when told ``unknown-session``, and failing over on ``UNAVAILABLE`` for
        calls that may be sent twice."""
        if self._closed.is_set():
            raise VaultError("the client is closed")
        self._reload_if_changed()
        order = [pinned] if pinned is not None else [(self._current + i) % len(self._nodes) for i in range(len(self._nodes))]
        last = None
        for index in order:
            node = self._connected(self._nodes[index])
            for fresh_session in (False, True):
                try:
                    key = self._session(node) if session else None
                    result = fn(node, key)
                    self._current = index
                    return result
                except grpc.RpcError as e:
                    error = from_rpc_error(e)
                except VaultError as e:
                    error = e
                last = error
                if isinstance(error, UnknownSession) and session and not fresh_session:
                    self._forget_session(node)
                    continue
                break
            if not (isinstance(last, Unavailable) and idempotent):
                raise last
        raise last

    # -- leases --------------------------------------------------------------------------

    def lease(self, tenant: str, environment: str, name: str, *, version: int = None, ttl: int = None) -> Lease:
        """Leases a secret's value (from the cache when a lease of it is still live).
        The caller owns the returned ``Lease`` and should ``wipe()`` it."""
        key = (tenant, environment, name, version)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expires - CACHE_MARGIN > time.time():
                return cached._copy()

        def call(node, session):
            request = broker_pb2.LeaseRequest(
                session_id=session.session_id,
                secret=common_pb2.SecretRef(tenant=tenant, environment=_environment(environment), name=name),
                ttl_seconds=ttl if ttl is not None else self._lease_ttl,
            )
            if version is not None:
                request.version = version
            answer = node.broker.Lease(request, timeout=self._timeout)
            aad = Aad("lease", TO_CLIENT, tenant, environment, name, answer.version, answer.lease_id)
            try:
                value = session.open(aad, answer.value.envelope)
            except ValueError as e:
                raise VaultError(f"the leased value does not open: {e}") from None
            return Lease(answer.lease_id, tenant, environment, name, answer.version,
                         answer.expires_unix_ms / 1000.0, answer.renewable_until_unix_ms / 1000.0,
                         value, self._nodes.index(node))

        lease = self._call(call, session=True)
        if self._watch and self._start_watch(lease._node):
            with self._lock:
                old = self._cache.pop(key, None)
                if old is not None:
                    old.wipe()
                self._cache[key] = lease._copy()
        return lease

    def renew(self, lease: Lease, ttl: int = 0) -> float:
        """Extends a lease (through the node that issued it); returns its new end, in
        Unix seconds."""
        def call(node, _):
            return node.broker.Renew(broker_pb2.RenewRequest(lease_id=lease.lease_id, ttl_seconds=ttl),
                                     timeout=self._timeout)
        answer = self._call(call, pinned=lease._node)
        lease.expires = answer.expires_unix_ms / 1000.0
        with self._lock:
            for cached in self._cache.values():
                if cached.lease_id == lease.lease_id:
                    cached.expires = lease.expires
        return lease.expires

    def revoke(self, lease: Lease):
        """Ends a lease early and wipes it."""
        def call(node, _):
            node.broker.Revoke(broker_pb2.RevokeRequest(lease_id=lease.lease_id), timeout=self._timeout)
        try:
            self._call(call, idempotent=False, pinned=lease._node)
        finally:
            self._evict(lease.lease_id)
            lease.wipe()

    def cached(self) -> int:
        """How many leases the cache holds."""
        with self._lock:
            return len(self._cache)

    def _evict(self, lease_id=None):
        with self._lock:
            for key in [k for k, v in self._cache.items() if lease_id is None or v.lease_id == lease_id]:
                self._cache.pop(key).wipe()

    def _start_watch(self, index: int) -> bool:
        """Starts the node's revocation watch if needed; whether it is connected (only
        then may a lease be cached)."""
        node = self._nodes[index]
        with node.lock:
            started = node.watch is None
            if started:
                node.watch = threading.Thread(target=self._watch_loop, args=(node,), daemon=True,
                                              name=f"vaultd-watch-{index}")
                node.watch.start()
        # Only a watch just started is waited for; a broken one is not waited on at
        # every lease (nothing is cached until it is back).
        return node.watching.wait(timeout=2.0) if started else node.watching.is_set()

    def _watch_loop(self, node: _Node):
        while not self._closed.is_set():
            try:
                stream = self._connected(node).broker.WatchRevocations(broker_pb2.WatchRevocationsRequest())
                node.stream = stream
                stream.initial_metadata()
                node.watching.set()
                for notice in stream:
                    if notice.lease_id:
                        self._evict(notice.lease_id)
            except grpc.RpcError:
                pass
            # Notices may have been missed: nothing cached can be trusted.
            node.watching.clear()
            self._evict()
            self._closed.wait(1.0)

    # -- transit -------------------------------------------------------------------------

    def encrypt(self, tenant: str, environment: str, plaintext) -> bytes:
        """A transit envelope of ``plaintext`` under the tenant's key."""
        def call(node, session):
            sealed = session.seal(Aad("transit.encrypt", TO_DAEMON, tenant, environment), plaintext)
            return node.broker.Encrypt(broker_pb2.EncryptRequest(
                session_id=session.session_id, tenant=tenant, environment=_environment(environment),
                plaintext=common_pb2.SealedPayload(envelope=sealed)), timeout=self._timeout).envelope
        return self._call(call, session=True)

    def decrypt(self, tenant: str, environment: str, envelope: bytes) -> bytearray:
        """The plaintext of a transit envelope, in a ``bytearray`` the caller wipes."""
        def call(node, session):
            answer = node.broker.Decrypt(broker_pb2.DecryptRequest(
                session_id=session.session_id, tenant=tenant, environment=_environment(environment),
                envelope=envelope), timeout=self._timeout)
            return self._open(session, Aad("transit.decrypt", TO_CLIENT, tenant, environment), answer.plaintext)
        return self._call(call, session=True)

    def encrypt_batch(self, tenant: str, environment: str, plaintexts) -> list:
        """Envelopes in order; an item that failed is a ``VaultError`` in its place."""
        def call(node, session):
            sealed = [common_pb2.SealedPayload(envelope=session.seal(
                Aad("transit.encrypt", TO_DAEMON, tenant, environment, version=i), p))
                for i, p in enumerate(plaintexts)]
            answer = node.broker.BatchEncrypt(broker_pb2.BatchEncryptRequest(
                session_id=session.session_id, tenant=tenant, environment=_environment(environment),
                plaintexts=sealed), timeout=self._timeout)
            return [r.envelope if r.WhichOneof("result") == "envelope" else _item_error(r) for r in answer.results]
        return self._call(call, session=True)

    def decrypt_batch(self, tenant: str, environment: str, envelopes) -> list:
        """Plaintexts (``bytearray``) in order; a failed item is a ``VaultError``."""
        def call(node, session):
            answer = node.broker.BatchDecrypt(broker_pb2.BatchDecryptRequest(
                session_id=session.session_id, tenant=tenant, environment=_environment(environment),
                envelopes=list(envelopes)), timeout=self._timeout)
            return [self._open(session, Aad("transit.decrypt", TO_CLIENT, tenant, environment, version=i), r.plaintext)
                    if r.WhichOneof("result") == "plaintext" else _item_error(r)
                    for i, r in enumerate(answer.results)]
        return self._call(call, session=True)

    @staticmethod
    def _open(session, aad, payload) -> bytearray:
        try:
            return session.open(aad, payload.envelope)
        except ValueError as e:
            raise VaultError(f"the plaintext does not open: {e}") from None

    # -- API keys ------------------------------------------------------------------------

    def verify_api_key(self, api_key, environment: str, scope: str = "", cost: int = 1):
        """Verifies a platform API key (``str``, ``bytes`` or ``bytearray``): returns who
        it belongs to (``key_id``, ``tenant``, ``scopes``, ``quota_remaining``), or
        raises an ``ApiKeyRefused`` or ``Limited`` subclass."""
        secret = api_key.encode() if isinstance(api_key, str) else api_key

        def call(node, session):
            sealed = session.seal(Aad("apikeys.verify", TO_DAEMON, environment=environment), secret)
            return node.broker.VerifyApiKey(apikeys_pb2.VerifyApiKeyRequest(
                session_id=session.session_id, api_key=common_pb2.SealedPayload(envelope=sealed),
                environment=_environment(environment), scope=scope, cost=cost), timeout=self._timeout)
        return self._call(call, session=True)

    # -- seal lifecycle (also over the local socket) -------------------------------------

    def status(self):
        """The seal state, share-set parameters and unseal progress."""
        return self._call(lambda node, _: node.admin.Status(admin_pb2.StatusRequest(), timeout=self._timeout))

    def init(self, threshold: int, shares: int) -> list:
        """Initialises vaultd; returns the shares (each a ``bytearray`` to wipe), once."""
        def call(node, session):
            answer = node.admin.Init(admin_pb2.InitRequest(
                session_id=session.session_id, threshold=threshold, share_count=shares), timeout=self._timeout)
            return [self._open(session, Aad("init", TO_CLIENT, version=i), s) for i, s in enumerate(answer.shares)]
        return self._call(call, idempotent=False, session=True)

    def unseal(self, share, nonce: str = ""):
        """Submits one share; ``nonce`` is the previous answer's for later shares."""
        def call(node, session):
            sealed = session.seal(Aad("unseal", TO_DAEMON), share)
            return node.admin.Unseal(admin_pb2.UnsealRequest(
                session_id=session.session_id, share=common_pb2.SealedPayload(envelope=sealed), nonce=nonce),
                timeout=self._timeout)
        return self._call(call, idempotent=False, session=True)

    def seal(self):
        """Seals vaultd: every key, session and lease is wiped."""
        self._call(lambda node, _: node.admin.Seal(admin_pb2.SealRequest(), timeout=self._timeout), idempotent=False)

    # -- lifetime ------------------------------------------------------------------------

    def close(self):
        """Stops the watches, closes the channels and wipes the cache and sessions."""
        self._closed.set()
        for node in self._nodes:
            self._disconnect(node)
        self._evict()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _item_error(result) -> VaultError:
    code = next((c for c in grpc.StatusCode if c.value[0] == result.error.code), None)
    return VaultError(result.error.message, code)
