# Offline stand-in for the official `postgres` image: Debian's PostgreSQL 15 with an entrypoint that keeps
# the parts of the official image's contract docker-compose.yml uses (PGDATA, POSTGRES_HOST_AUTH_METHOD,
# *.sql files in /docker-entrypoint-initdb.d run once on a new cluster, `postgres …` as the command).
ARG BASE
FROM ${BASE}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
RUN install -d -o postgres -g postgres /var/lib/postgresql/data /docker-entrypoint-initdb.d
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
