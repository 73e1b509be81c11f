#!/usr/bin/env bash
# Prints a PostgreSQL URL for the tests on stdout, starting the local cluster first if it is
# installed but stopped, and creating a scratch database. Prints nothing when there is no PostgreSQL.
set -u
if [ -n "${TOKENIM_TEST_DATABASE_URL:-}" ]; then echo "$TOKENIM_TEST_DATABASE_URL"; exit 0; fi
command -v psql >/dev/null 2>&1 || exit 0
PGHOST=127.0.0.1; PGPORT=5432; export PGCONNECT_TIMEOUT=3
ready() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }
if ! ready; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true; done
    for _ in $(seq 1 30); do ready && break; sleep 0.5; done
  fi
fi
ready || { echo "postgres-for-tests: PostgreSQL is installed but not reachable; testing on SQLite only" >&2; exit 0; }
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc "select 1 from pg_database where datname='tokenim_test'" | grep -q 1 \
  || psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc 'create database tokenim_test' >/dev/null
echo "postgresql://postgres@$PGHOST:$PGPORT/tokenim_test"
