# Shared set-up steps for scripts/run and scripts/test. Idempotent: safe to run on every call.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

need_root_apt() {
  # Install Debian packages when a command is missing (the machine may be fresh).
  local missing=()
  for pair in "$@"; do
    local cmd="${pair%%:*}" pkg="${pair##*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_venv() {
  need_root_apt python3:python3
  if [ ! -x "$PY" ]; then
    log "creating virtualenv in .venv"
    python3 -m venv "$VENV" || { need_root_apt "x:python3-venv"; python3 -m venv "$VENV"; }
  fi
  local stamp="$VENV/.cir-installed"
  local digest
  digest="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    log "installing CIR and its dependencies (pip install -e .[dev])"
    "$PY" -m pip install -q --upgrade pip 2>&1 | { grep -vE "^WARNING: Location" || true; }
    # Keep pip's own errors, drop the machine's index warnings and setuptools' editable-install banner.
    "$PY" -m pip install -q -e "$ROOT[dev]" 2>&1 \
      | { grep -vE "^WARNING: Location|BuildBackendWarning|^ *!!|\*{20}|Please be careful|name as your package|with strategy, WheelFile|^\s*$" || true; }
    echo "$digest" > "$stamp"
  fi
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    need_root_apt "x:postgresql"
  fi
  log "starting PostgreSQL"
  local version; version="$(ls /etc/postgresql | sort -V | tail -n1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || service postgresql start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  # The suite connects as postgres over TCP with trust auth, as on the reference machine.
  if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    log "allowing local trust authentication for the test database"
    local hba; hba="$(su postgres -c "psql -tAc 'show hba_file'")"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
  fi
}

ensure_redis() {
  # The Celery integration tests use a real broker on 127.0.0.1:6379.
  if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then return; fi
  need_root_apt redis-server:redis-server
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/cir-redis.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 0.5; done
  echo "Redis did not come up on 127.0.0.1:6379" >&2; exit 1
}

ensure_chromium() {
  # Browser tests drive Debian's Chromium through Playwright; Playwright never downloads its own browser.
  need_root_apt chromium:chromium
  # A CJK font, so Chinese pages render as text rather than boxes in screenshots.
  if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
    need_root_apt "x-cir-cjk-font:fonts-wqy-microhei"
  fi
}

ensure_promtool() {
  # tests/monitoring checks docs/monitoring/alerts.yml with promtool, from Debian's prometheus package
  # (the package's service is not started here; only the promtool binary is used).
  need_root_apt promtool:prometheus
}
