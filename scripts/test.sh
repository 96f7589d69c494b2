#!/usr/bin/env bash
# Brings up what the test suite needs, then runs it.
# - PostgreSQL from Debian's packages, a throwaway cluster on 127.0.0.1 (the db suite runs on it too);
# - Chromium from Debian's packages, for the one real-browser test (Playwright drives /usr/bin/chromium).
# Both are installed once; nothing is downloaded outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "Installing from Debian: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "Missing ${need[*]}: the tests that need them will be skipped (run as root to install)."
  fi
fi

# A free port, so two runs on one machine (or a developer's server) never collide.
PGPORT=${CELLTALLY_TEST_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "${CELLTALLY_TEST_PG_URL:-}" ]; then
  :
elif [ -n "$pgbin" ]; then
  pgdir=$(mktemp -d /tmp/celltally-pg.XXXXXX)
  runas=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$pgdir"
    runas=(runuser -u postgres --)
  fi
  "${runas[@]}" "$pgbin/initdb" -D "$pgdir/data" -U celltally -A trust >/dev/null
  "${runas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
      -o "-h 127.0.0.1 -p $PGPORT -k $pgdir -F" start >/dev/null
  trap '"${runas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
  "$pgbin/createdb" -h 127.0.0.1 -p "$PGPORT" -U celltally celltally_test
  export CELLTALLY_TEST_PG_URL="postgresql+psycopg://celltally@127.0.0.1:$PGPORT/celltally_test"
  echo "PostgreSQL for the tests: $CELLTALLY_TEST_PG_URL"
fi

# The extra venv: a count-only install (requirements-count.txt, no TensorFlow) plus
# bioimageio.core (requirements-bioimageio.txt). tests/core/test_exchange_venv.py runs
# `python -m core count` and bioimageio.core's test_model in it. Rebuilt only when either file
# changes (the stamp names their checksum, like the Makefile's).
EXTRA=.venv-extra
extra_stamp="$EXTRA/.installed-$(cat requirements-count.txt requirements-bioimageio.txt | cksum | cut -d' ' -f1)"
if [ ! -f "$extra_stamp" ]; then
  echo "Building $EXTRA (count-only install + bioimageio.core)..."
  start=$(date +%s)
  rm -rf "$EXTRA"
  python3 -m venv "$EXTRA"
  "$EXTRA/bin/python" -m pip install -q --no-compile --disable-pip-version-check \
      -r requirements-count.txt -r requirements-bioimageio.txt
  touch "$extra_stamp"
  echo "Built $EXTRA in $(( $(date +%s) - start )) s"
fi
export CELLTALLY_EXTRA_PYTHON="$PWD/$EXTRA/bin/python"

set +e
"$PY" -m pytest "$@"
rc=$?
set -e
# pytest's 5 means it collected nothing: that is a failure for us.
exit $rc
