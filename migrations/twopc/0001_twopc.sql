-- The participant side of two-phase commit, in every participant database (see shared/twopc).
-- Applied with its own migrations table (`_sqlx_migrations_twopc`), beside the service's own migrations.

-- A row per branch that COMMITTED: written inside the branch's own transaction before PREPARE TRANSACTION,
-- so it becomes visible exactly when COMMIT PREPARED does. Its unique key is also the gid's lock: a second
-- prepare of the same gid waits on it (with a lock timeout) instead of running the branch twice.
CREATE TABLE twopc_commits (
    gid         text PRIMARY KEY,
    prepared_at timestamptz NOT NULL DEFAULT now()
);

-- A row per branch that must never commit: it voted no, or it was rolled back. Written and committed
-- BEFORE `ROLLBACK PREPARED`, so a prepare that arrives late (after the rollback) sees it and votes no.
CREATE TABLE twopc_refusals (
    gid        text PRIMARY KEY,
    reason     text NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now()
);
