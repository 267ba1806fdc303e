#!/usr/bin/env bash
# nginx_unwind.sh: complete stacks of Debian's own nginx (built without
# frame pointers) through the `profile` example, with no extra flags.
#
# Starts nginx with a private configuration on a loopback port (WORKERS
# workers, a small static file, an access log written to a file), drives it
# with `wrk` against 127.0.0.1 only, for a bounded time, and profiles one
# worker on-CPU and then off-CPU with `cargo run --release --example profile
# -- --pid WORKER --mode on-cpu|off-cpu --folded F --svg S --duration N`.
# From each folded file it prints the share of on-CPU samples, and of
# off-CPU time, whose stack reaches `ngx_process_events_and_timers` (the
# worker's event loop), and the total. Needs root, nginx and wrk.
#
#   bash benches/nginx_unwind.sh                 # DURATION=10 WORKERS=2 PORT=18080
#   OUT=docs/images bash benches/nginx_unwind.sh # also keeps the SVGs there
#   PROFILE=/other/build/profile bash benches/nginx_unwind.sh
#
# EXTRA="--stack-mode fp" passes more flags to the example (on builds whose
# example has that flag), to compare with frame-pointer walks.
# Exits non-zero if either share is below MIN_SHARE percent (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10}
workers=${WORKERS:-2}
port=${PORT:-18080}
min_share=${MIN_SHARE:-90}
out=${OUT:-}
extra=${EXTRA:-}

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "nginx_unwind: $tool not found (apt-get install nginx wrk)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "nginx_unwind: run as root" >&2; exit 1; }

if [ -n "${PROFILE:-}" ]; then
  profile=$PROFILE
else
  cargo build --release --quiet --example profile
  profile=${CARGO_TARGET_DIR:-target}/release/examples/profile
fi

dir=$(mktemp -d)
nginx_pid=
wrk_pid=
cleanup() {
  [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  sleep 0.3
  rm -rf "$dir"
}
trap cleanup EXIT

chmod 755 "$dir"
mkdir -p "$dir/www" "$dir/logs"
head -c 2048 /dev/urandom | base64 >"$dir/www/index.html"
cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon on;
master_process on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log $dir/logs/access.log;
  client_body_temp_path $dir/tmp_body;
  proxy_temp_path $dir/tmp_proxy;
  fastcgi_temp_path $dir/tmp_fastcgi;
  uwsgi_temp_path $dir/tmp_uwsgi;
  scgi_temp_path $dir/tmp_scgi;
  server {
    listen 127.0.0.1:$port;
    root $dir/www;
  }
}
EOF
nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
nginx_pid=$(cat "$dir/nginx.pid")
worker=""
for _ in $(seq 50); do
  worker=$(pgrep -P "$nginx_pid" | head -1 || true)
  [ -n "$worker" ] && break
  sleep 0.1
done
[ -n "$worker" ] || { echo "nginx_unwind: no nginx worker" >&2; exit 1; }
curl -sf "http://127.0.0.1:$port/index.html" >/dev/null 2>&1 || wget -qO /dev/null "http://127.0.0.1:$port/index.html" 2>/dev/null || true
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///') master $nginx_pid, profiling worker $worker of $workers; load: wrk on 127.0.0.1:$port"

# The share of the folded weight whose stack names the event loop.
share() {
  awk '{ n = $NF; total += n; if ($0 ~ /(^|;)ngx_process_events_and_timers(;| )/) hit += n }
       END { printf "%.1f %d %d\n", total ? 100 * hit / total : 0, hit, total }' "$1"
}

status=0
for mode in on-cpu off-cpu; do
  # The load runs a little longer than the profile, so it covers it; wrk
  # stops by itself after its duration.
  wrk -t1 -c32 -d "$((${duration%.*} + 4))s" "http://127.0.0.1:$port/index.html" >"$dir/wrk-$mode.log" 2>&1 &
  wrk_pid=$!
  sleep 1
  # shellcheck disable=SC2086
  "$profile" --pid "$worker" --mode "$mode" --duration "$duration" \
    --folded "$dir/$mode.folded" --svg "$dir/$mode.svg" $extra >"$dir/profile-$mode.log" 2>&1 \
    || { echo "nginx_unwind: the profile example failed:" >&2; cat "$dir/profile-$mode.log" >&2; exit 1; }
  wait "$wrk_pid" || true
  wrk_pid=
  read -r pct hit total < <(share "$dir/$mode.folded")
  unit=samples
  [ "$mode" = off-cpu ] && unit="us off CPU"
  requests=$(awk '/requests in/ {print $1}' "$dir/wrk-$mode.log")
  echo "$mode: $pct% reach ngx_process_events_and_timers ($hit of $total $unit; wrk: $requests requests)"
  { grep -E '^\s+(on-CPU|off-CPU):' "$dir/profile-$mode.log" || true; } | sed 's/^ */  profile: /'
  if [ -n "$out" ]; then
    mkdir -p "$out"
    cp "$dir/$mode.svg" "$out/nginx-${mode/-/}.svg"
    cp "$dir/$mode.folded" "$out/nginx-${mode/-/}.folded"
  fi
  awk -v p="$pct" -v m="$min_share" 'BEGIN { exit !(p >= m) }' || status=1
done
[ "$status" = 0 ] || echo "nginx_unwind: a share is below $min_share%" >&2
exit "$status"
