#!/usr/bin/env bash
# The Python client's tests, against the real vaultd and vaultctl: a virtual environment
# (target/python-venv) with requirements-test.txt from PyPI, this package built (its gRPC
# stubs generated from crates/vault-proto/proto), then pytest. The binaries default to
# target/testkit-vaultd/debug/vaultd and target/debug/vaultctl (VAULTD_BIN, VAULTCTL_BIN).
set -euo pipefail
cd "$(dirname "$0")"
repo="$(cd ../.. && pwd)"
venv="${VAULTD_PYTHON_VENV:-$repo/target/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "cannot create a Python virtual environment: install python3-venv" >&2
        exit 2
    }
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-test.txt
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
    --force-reinstall .
rm -rf build vaultd.egg-info
cd tests
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
