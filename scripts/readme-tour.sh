#!/usr/bin/env bash
# The README's command-line tour, run for real: starts a private
# redis-server on a unix socket, runs each command and prints a transcript
# (`$ command`, then its stdout and stderr). Needs streamkeeper, redis-server,
# redis-cli and jq on PATH. Takes about 30 s (a retry waits for its time).
set -u
dir=$(mktemp -d)
trap 'redis-cli -s "$dir/r.sock" shutdown nosave >/dev/null 2>&1; rm -rf "$dir"' EXIT
redis-server --port 0 --unixsocket "$dir/r.sock" --save '' --appendonly no --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -s "$dir/r.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
export STREAMKEEPER_REDIS="redis+unix://$dir/r.sock"
redis-cli() { command redis-cli -s "$dir/r.sock" "$@"; }
run() { echo "\$ $*"; eval "$@" 2>&1; }
run "streamkeeper produce orders --field sku=a-1 --field qty=2"
run "echo '{\"sku\":\"b-7\",\"qty\":1}' | streamkeeper produce orders --json"
run "redis-cli XADD orders '*' sku c-3 qty oops"
run "streamkeeper tail orders"
run "streamkeeper group create orders billing --from -"
run "streamkeeper consume orders --group billing --peek --count 1"
run "streamkeeper consume orders --group billing --count 2"
run "streamkeeper consume orders --group billing --count 1 --retry-backoff 30s --exec 'jq -e \".fields.qty | tonumber\" >/dev/null 2>&1 || { echo \"qty is not a number\" >&2; exit 1; }'"
run "streamkeeper retry ls orders"
run "streamkeeper stat orders -g billing --max-lag 0; echo \$?"
run "streamkeeper consume orders --group billing --count 1 --max-deliveries 1 --exec 'jq -c .fields'"
run "streamkeeper dlq ls orders"
run "streamkeeper group ls orders"
run "streamkeeper consume orders --group nope; echo \$?"
