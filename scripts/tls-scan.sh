#!/usr/bin/env bash
# Scans vaultd's mutual-TLS listener with testssl.sh (Debian package `testssl.sh`):
# starts `vaultd dev` on a free loopback port, runs testssl with and without a client
# certificate, and checks what SECURITY.md promises: TLS 1.3 only, a client certificate
# required, nothing rated above LOW. Prints a summary; exits non-zero if a check fails.
#   scripts/tls-scan.sh [path/to/vaultd]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v testssl >/dev/null && ! command -v testssl.sh >/dev/null; then
    echo "testssl.sh is not installed: apt-get install testssl.sh" >&2
    exit 2
fi
testssl="$(command -v testssl || command -v testssl.sh)"
vaultd="${1:-}"
if [ -z "$vaultd" ]; then
    cargo build --locked --quiet --release -p vaultd --bin vaultd
    vaultd=target/release/vaultd
fi

work="$(mktemp -d)"
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
http="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$vaultd" dev --dir "$work/dev" --grpc "127.0.0.1:$port" --http "127.0.0.1:$http" \
    >"$work/dev.out" 2>"$work/dev.err" &
pid=$!
for _ in $(seq 100); do
    [ -s "$work/dev/admin.env" ] && break
    sleep 0.1
done
[ -s "$work/dev/admin.env" ] || { cat "$work/dev.err" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/dev/admin.env"
cert="$VAULTD_CLIENT_CERT" key="$VAULTD_CLIENT_KEY" ca="$VAULTD_CACERT"
# testssl 3.0 (Debian 12) cannot present a client certificate; TLS 1.3 lets it see the
# whole negotiation anyway, since the server asks for the client's certificate after
# its own hello. Whether one is required is checked with openssl s_client.
"$testssl" --quiet --color 0 --warnings off --sneaky --add-ca "$ca" \
    --jsonfile "$work/scan.json" "127.0.0.1:$port" >"$work/scan.txt" 2>&1 || true
hello() { (printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'; sleep 1) |
    timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$ca" -alpn h2 -quiet "$@" 2>&1 || true; }
without="$(hello)"
with="$(hello -cert "$cert" -key "$key" | tr -d '\0')"

python3 - "$work/scan.json" "$without" "$with" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
without, with_cert = sys.argv[2], sys.argv[3]
rank = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
by_id = {f["id"]: f["finding"] for f in findings}
failed = []
protocols = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]
print("protocols: " + ", ".join(f"{p} {by_id.get(p, '?')}" for p in protocols))
if not by_id.get("TLS1_3", "").startswith("offered"):
    failed.append("TLS 1.3 is not offered")
failed += [f"{p} is offered" for p in protocols[:-1] if not by_id.get(p, "").startswith("not offered")]
ciphers = sorted(f["finding"].split()[1] for f in findings if f["id"].startswith("cipher_x"))
print("cipher suites: " + ", ".join(ciphers))
# The dev PKI's server certificate is short-lived and names no CRL or OCSP URI (the
# private CA is pinned by every client): reported apart from the TLS configuration.
certificate = [f for f in findings if f["id"].startswith("cert_") and f["severity"] in rank]
configuration = [f for f in findings if not f["id"].startswith("cert_") and f["severity"] in rank]
for f in configuration:
    print(f"  {f['severity']}: {f['id']}: {f['finding']}")
above_low = [f for f in configuration if rank[f["severity"]] > 1]
if above_low:
    failed.append(f"{len(above_low)} configuration findings above LOW")
print(f"configuration findings: {len(configuration)} (above LOW: {len(above_low)})")
for f in certificate:
    print(f"  certificate content (dev PKI): {f['severity']}: {f['id']}: {f['finding']}")
if "certificate required" in without:
    print("without a client certificate: refused (TLS alert 116, certificate required)")
else:
    failed.append("a client without a certificate was not refused")
if "alert" not in with_cert and "error" not in with_cert:
    print("with the dev admin certificate: HTTP/2 settings received")
else:
    failed.append("a client with a valid certificate got no HTTP/2 answer")
if failed:
    print("FAILED: " + "; ".join(failed))
    sys.exit(1)
print("ok: TLS 1.3 only, a client certificate required, no configuration finding above LOW")
PY
