-- The coordinator's decision log. A decision is written here BEFORE any participant hears it; recovery
-- (after a crash, or for a participant that did not acknowledge) drives every undone transaction to it.

CREATE TABLE transactions (
    gid             text PRIMARY KEY,
    state           text NOT NULL CHECK (state IN ('PREPARING', 'COMMITTING', 'ABORTING', 'COMMITTED', 'ABORTED')),
    decision        text CHECK (decision IN ('commit', 'abort')),
    reason          text,
    -- What the transaction does (the order), as sent to every participant.
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Undecided after this: presumed abort.
    deadline        timestamptz NOT NULL,
    decided_at      timestamptz,
    completed_at    timestamptz,
    -- Recovery's schedule for a decided transaction whose phase 2 is not done.
    phase2_rounds   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz
);

CREATE INDEX transactions_undone ON transactions (next_attempt_at) WHERE state IN ('PREPARING', 'COMMITTING', 'ABORTING');
CREATE INDEX transactions_by_state ON transactions (state, created_at);

CREATE TABLE branches (
    gid         text NOT NULL REFERENCES transactions (gid) ON DELETE CASCADE,
    participant text NOT NULL,
    vote        text CHECK (vote IN ('yes', 'no')),
    vote_reason text,
    voted_at    timestamptz,
    acked_at    timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    PRIMARY KEY (gid, participant)
);
