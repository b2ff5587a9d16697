# Offline stand-in for deploy/Dockerfile: the same runtime stage (Debian, curl, the non-root user
# `distlab`), with the service binaries compiled on the host (`cargo build --release`) instead of in a
# build stage.
ARG BASE
FROM ${BASE}
RUN useradd --system --uid 10001 --home-dir /var/lib/distlab --create-home distlab \
    && install -d -o distlab -g distlab /var/lib/distlab/config
COPY distlab-* /usr/local/bin/
USER distlab
WORKDIR /var/lib/distlab
