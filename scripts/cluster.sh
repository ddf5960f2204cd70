#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server and three vaultd nodes on loopback, all on one
# database, for a person to try a cluster: a CA and certificates (vaultctl pki), the
# server over TLS with client-certificate authentication, nodes a, b and c on gRPC
# ports 8301-8303 (health on 9301-9303), each with a node certificate to join the others
# by, and an operator certificate. Prints how to initialise, unseal (one node: the
# others join it) and use them; stops everything on Ctrl-C.
#   scripts/cluster.sh [DIR]     (DIR: where to keep the files; a new temporary one by default)
# Needs the PostgreSQL server (apt-get install postgresql), or VAULTD_PG_BIN naming its
# binaries. Run as root, it runs PostgreSQL as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${VAULTD_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL's server is not installed: apt-get install postgresql (or set VAULTD_PG_BIN)" >&2
    exit 2
fi
cargo build --locked --quiet --release -p vaultd --bin vaultd -p vault-cli --bin vaultctl
vaultd="$PWD/target/release/vaultd"
vaultctl="$PWD/target/release/vaultctl"
policies="$PWD/policies"

dir="${1:-$(mktemp -d /tmp/vaultd-cluster.XXXXXX)}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
chmod 755 "$dir"
pgport=5499
operator="spiffe://billing.example/human/cluster/operator"
pids=()
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_postgres "$bin/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null 2>&1 || true
    echo "stopped; the files are in $dir"
}
trap cleanup EXIT

# Certificates: one CA for vaultd's listeners, its clients and PostgreSQL.
"$vaultctl" pki init-ca --dir "$dir/ca" --name "vaultd cluster CA" >/dev/null
"$vaultctl" pki issue-server --ca-dir "$dir/ca" --dns localhost --ip 127.0.0.1 \
    --out "$dir/server" >/dev/null
"$vaultctl" pki issue-client --ca-dir "$dir/ca" --spiffe-id "$operator" --out "$dir/operator" >/dev/null
"$vaultctl" pki issue-client --ca-dir "$dir/ca" \
    --spiffe-id "spiffe://billing.example/svc/vaultd-db" --out "$dir/db-client" >/dev/null

# PostgreSQL: TLS 1.3, and a client certificate from the CA for every TCP connection.
if [ ! -d "$dir/pg" ]; then
    mkdir "$dir/pg" "$dir/pg-socket"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg" "$dir/pg-socket"
    as_postgres "$bin/initdb" --no-sync --auth=trust --username=vaultd -D "$dir/pg" >/dev/null
    for f in server.pem server.key; do
        cp "$dir/$f" "$dir/pg/$f"
    done
    cp "$dir/ca/ca.pem" "$dir/pg/ca.pem"
    chmod 600 "$dir/pg/server.key"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg/server.pem" "$dir/pg/server.key" "$dir/pg/ca.pem"
    cat >>"$dir/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$dir/pg-socket'
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.pem'
ssl_min_protocol_version = 'TLSv1.3'
EOF
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n' \
        >"$dir/pg/pg_hba.conf"
fi
as_postgres "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w start >/dev/null
as_postgres "$bin/psql" -h "$dir/pg-socket" -p "$pgport" -U vaultd -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'vaultd'" | grep -q 1 ||
    as_postgres "$bin/psql" -h "$dir/pg-socket" -p "$pgport" -U vaultd -d postgres -qc \
        "CREATE DATABASE vaultd"

# The example policies, and a role for this script's operator.
mkdir -p "$dir/policies"
cp "$policies"/*.toml "$dir/policies/"
cat >"$dir/policies/cluster-operator.toml" <<EOF
[[role]]
id = "cluster-operator"
identities = ["$operator"]
permissions = ["status", "unseal", "seal", "rekey", "keys.rotate", "secrets.write",
    "secrets.read-metadata", "secrets.delete", "leases.read", "leases.revoke",
    "apikeys.issue", "apikeys.revoke", "audit.read", "snapshot.save"]
EOF

identities=()
for node in a b c; do
    identities+=("\"spiffe://billing.example/vaultd/node-$node\"")
done
nodes="$(IFS=,; echo "${identities[*]}")"
n=0
for node in a b c; do
    n=$((n + 1))
    mkdir -p "$dir/$node"
    # Its client certificate, to join the others with (policies/cluster.toml gives
    # these identities node.join).
    [ -f "$dir/$node/node.pem" ] || "$vaultctl" pki issue-client --ca-dir "$dir/ca" \
        --spiffe-id "spiffe://billing.example/vaultd/node-$node" --out "$dir/$node/node" >/dev/null
    others=()
    for m in 1 2 3; do [ "$m" = "$n" ] || others+=("\"https://localhost:830$m\""); done
    cat >"$dir/$node/vaultd.toml" <<EOF
node = "node-$node"
[listen]
grpc = "127.0.0.1:830$n"
http = "127.0.0.1:930$n"
socket = "$dir/$node/vaultd.sock"
[tls]
cert = "$dir/server.pem"
key = "$dir/server.key"
client_ca = "$dir/ca/ca.pem"
[policy]
dir = "$dir/policies"
[audit]
path = "$dir/$node/audit.jsonl"
[storage]
engine = "postgres"
[storage.postgres]
connect = "host=127.0.0.1 port=$pgport user=vaultd dbname=vaultd"
ca = "$dir/ca/ca.pem"
client_cert = "$dir/db-client.pem"
client_key = "$dir/db-client.key"
[cluster]
nodes = [$nodes]
[cluster.join]
endpoints = [$(IFS=,; echo "${others[*]}")]
ca = "$dir/ca/ca.pem"
cert = "$dir/$node/node.pem"
key = "$dir/$node/node.key"
EOF
    "$vaultd" serve --config "$dir/$node/vaultd.toml" 2>"$dir/$node/vaultd.log" &
    pids+=("$!")
done
for n in 1 2 3; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:930$n/v1/health?sealedcode=200&uninitcode=200" && break
        sleep 0.1
    done
done

cat <<EOF
PostgreSQL on 127.0.0.1:$pgport, nodes a, b, c on https://localhost:8301..8303; files in $dir.
As the operator:
  export VAULTD_CACERT=$dir/ca/ca.pem VAULTD_CLIENT_CERT=$dir/operator.pem VAULTD_CLIENT_KEY=$dir/operator.key
  $vaultctl --addr https://localhost:8301 init --threshold 1 --shares 1 --share-dir $dir/shares
  $vaultctl --addr https://localhost:8301 unseal --share-file $dir/shares/share-1.txt
  for p in 8302 8303; do $vaultctl --addr https://localhost:\$p status; done   # b and c joined a
  echo -n sk-test | $vaultctl --addr https://localhost:8301 secret put acme byok/openai --env live --kind byok
  $vaultctl --addr https://localhost:8302 secret list acme
  $vaultctl --addr https://localhost:8303 lease revoke --tenant acme
  $vaultctl --addr https://localhost:8301 seal --cluster
Logs: $dir/{a,b,c}/vaultd.log. Ctrl-C stops everything.
EOF
wait
