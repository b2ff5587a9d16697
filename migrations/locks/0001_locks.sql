-- The lock service's PostgreSQL backend (the seed's 数据库的唯一索引).

-- The seed's lock as it describes it: insert a row to lock, delete it to unlock; the unique index
-- guarantees one row per name. It has the three weaknesses the seed lists (no expiry, no waiting, not
-- reentrant); the tests show them, and `locks` below fixes them.
CREATE TABLE naive_locks (
    name  text NOT NULL,
    owner text NOT NULL
);
CREATE UNIQUE INDEX naive_locks_name ON naive_locks (name);

-- Fencing tokens: one sequence for every name, so each lock's tokens strictly increase.
CREATE SEQUENCE lock_fencing_tokens;

-- The safe form: a lease that expires (an expired row may be taken over), a hold count for reentrancy
-- by owner, and the holder's fencing token. Waiters are woken by NOTIFY on `distlab_lock_released`.
CREATE TABLE locks (
    name          text PRIMARY KEY,
    lease_id      uuid NOT NULL,
    owner         text NOT NULL,
    hold_count    integer NOT NULL CHECK (hold_count > 0),
    fencing_token bigint NOT NULL,
    acquired_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL
);
