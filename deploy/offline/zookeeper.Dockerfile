# Offline stand-in for the official `zookeeper` image: Debian's ZooKeeper 3.8 with an entrypoint that reads
# the official image's variables docker-compose.yml sets (ZOO_TICK_TIME, ZOO_4LW_COMMANDS_WHITELIST,
# ZOO_ADMINSERVER_ENABLED, JVMFLAGS).
ARG BASE
FROM ${BASE}
RUN useradd --system --uid 10002 --home-dir /data zookeeper-offline \
    && install -d -o zookeeper-offline /data /conf
COPY zookeeper-entrypoint.sh /usr/local/bin/zookeeper-entrypoint.sh
USER zookeeper-offline
EXPOSE 2181
ENTRYPOINT ["/bin/sh", "/usr/local/bin/zookeeper-entrypoint.sh"]
