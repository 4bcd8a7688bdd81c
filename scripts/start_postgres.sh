#!/usr/bin/env bash
# Install (if needed) and start Debian's PostgreSQL server on loopback, create the role the
# registry tests use, and print the URL to export as RLSEC_TEST_PG. Needs root.
#   export RLSEC_TEST_PG="$(bash scripts/start_postgres.sh)"
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
if [ -z "$(pg_lsclusters --no-header)" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    pg_createcluster "$version" main >&2
fi
read -r version cluster port _ < <(pg_lsclusters --no-header | head -1)
pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true  # already running is fine
for _ in $(seq 30); do
    runuser -u postgres -- pg_isready -q -p "$port" && break
    sleep 1
done
runuser -u postgres -- psql -p "$port" -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles
    WHERE rolname = 'rlsec_test') THEN CREATE ROLE rlsec_test LOGIN CREATEDB
    PASSWORD 'rlsec_test'; END IF; END \$\$;" >&2
echo "postgresql://rlsec_test:rlsec_test@127.0.0.1:${port}/postgres"
