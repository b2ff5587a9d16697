# Offline stand-in for the official `apache/kafka` image: tansu, the Kafka-compatible broker the local stack
# runs (its binary, built on the host by `cargo install tansu`, is copied in). One listener: clients inside
# the compose network are told the chaos sidecar's clients->kafka proxy, like the real image's CLIENTS
# listener; there is no HOST listener, so Kafka clients on the host cannot follow it (see docs/docker.md).
ARG BASE
FROM ${BASE}
# Its data directory is where docker-compose.yml mounts the `kafka` volume.
RUN useradd --system --uid 10003 --home-dir /var/lib/kafka tansu \
    && install -d -o tansu /var/lib/kafka/data
COPY tansu /usr/local/bin/tansu
USER tansu
WORKDIR /var/lib/kafka/data
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/tansu"]
CMD ["broker", "--listener-url", "tcp://0.0.0.0:9092", "--advertised-listener-url", "tcp://chaos:17090", \
     "--storage-engine", "sqlite://tansu.db"]
