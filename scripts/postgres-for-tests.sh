#!/usr/bin/env bash
# Prints a PostgreSQL URL for the tests on stdout, starting the local cluster first if it is
# installed but stopped, and creating a scratch database named after this checkout (so two
# checkouts testing at once never share one). Prints nothing when there is no PostgreSQL; under CI
# (CI=true) that is an error instead, so the PostgreSQL half of the suite can't silently vanish.
set -u
fail() {
  if [ "${CI:-}" = "true" ]; then echo "postgres-for-tests: $1; CI needs PostgreSQL, stopping" >&2; exit 1; fi
  echo "postgres-for-tests: $1; testing on SQLite only" >&2; exit 0
}
if [ -n "${TOKENIM_TEST_DATABASE_URL:-}" ]; then echo "$TOKENIM_TEST_DATABASE_URL"; exit 0; fi
PGHOST=127.0.0.1; PGPORT=5432; export PGCONNECT_TIMEOUT=3
if ! command -v psql >/dev/null 2>&1; then
  [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    && { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; }
  command -v psql >/dev/null 2>&1 || fail "PostgreSQL is not installed"
fi
ready() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }
if ! ready; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true; done
    for _ in $(seq 1 30); do ready && break; sleep 0.5; done
  fi
fi
ready || fail "PostgreSQL is installed but not reachable on $PGHOST:$PGPORT"
name="tokenim_test_$(pwd -P | sha1sum | cut -c1-8)"
psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc "select 1 from pg_database where datname='$name'" | grep -q 1 \
  || psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc "create database $name" >/dev/null \
  || fail "could not create the test database $name"
echo "postgresql://postgres@$PGHOST:$PGPORT/$name"
