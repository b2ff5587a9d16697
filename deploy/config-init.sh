#!/bin/sh
# Initialises the config service's Raft cluster through node 1, once: an initialised cluster answers 409.
# Then waits (at most 60 s) until node 1 is ready, i.e. the cluster has elected a leader.
set -eu
token="${ADMIN_TOKEN:?}"
status=$(curl -sS -o /tmp/init.out -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
  http://config-1:8091/v1/cluster/init)
case "$status" in
  200) echo "config cluster initialised (nodes 1-3)" ;;
  409) echo "config cluster was already initialised" ;;
  *) echo "initialising the config cluster: HTTP $status $(cat /tmp/init.out)" >&2; exit 1 ;;
esac
i=0
until curl -fsS -o /dev/null http://config-1:8091/readyz; do
  i=$((i + 1))
  if [ "$i" -ge 120 ]; then echo "the config cluster elected no leader within 60 s" >&2; exit 1; fi
  sleep 0.5
done
echo "config cluster has a leader"
