#!/bin/sh
# A local Redis Cluster for trying streamkeeper: 3 primaries + 3 replicas
# on 127.0.0.1 ports 7101-7106, data in /tmp/streamkeeper-cluster.
#   scripts/local-cluster.sh start   # prints the URL to use
#   scripts/local-cluster.sh stop
set -eu
DIR=${STREAMKEEPER_CLUSTER_DIR:-/tmp/streamkeeper-cluster}
PORTS="7101 7102 7103 7104 7105 7106"
case "${1:-start}" in
start)
  for p in $PORTS; do
    if redis-cli -p "$p" ping >/dev/null 2>&1; then
      echo "port $p is in use (a cluster already running? run: $0 stop)" >&2; exit 2
    fi
  done
  for p in $PORTS; do
    mkdir -p "$DIR/$p"
    (cd "$DIR/$p" && rm -f nodes.conf && redis-server --port "$p" --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --save "" --appendonly no --daemonize yes --logfile redis.log)
  done
  for p in $PORTS; do
    until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.1; done
  done
  redis-cli --cluster create $(for p in $PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1
  until redis-cli -p 7101 cluster info | grep -q cluster_state:ok; do sleep 0.2; done
  for p in $PORTS; do
    until redis-cli -p "$p" info replication | grep -q -e role:master -e master_link_status:up; do sleep 0.2; done
  done
  echo "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
  ;;
stop)
  for p in $PORTS; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
