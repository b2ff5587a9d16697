#!/bin/sh
# Entrypoint of the offline ZooKeeper image (see zookeeper.Dockerfile): a standalone server on port 2181.
set -eu
cat >/conf/zoo.cfg <<CFG
tickTime=${ZOO_TICK_TIME:-2000}
dataDir=/data
clientPort=2181
admin.enableServer=${ZOO_ADMINSERVER_ENABLED:-true}
4lw.commands.whitelist=${ZOO_4LW_COMMANDS_WHITELIST:-srvr}
maxClientCnxns=0
CFG
# shellcheck disable=SC2086 # JVMFLAGS is a list of flags
exec java ${JVMFLAGS:-} -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
  org.apache.zookeeper.server.quorum.QuorumPeerMain /conf/zoo.cfg
