# Offline stand-in for the official `redis` image: Debian's redis-server; docker-compose.yml gives the command.
ARG BASE
FROM ${BASE}
RUN install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
