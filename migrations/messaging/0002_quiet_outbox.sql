-- A transaction that will be prepared for two-phase commit cannot NOTIFY (PostgreSQL refuses to PREPARE
-- it). Such a transaction sets `distlab.outbox_quiet` to `on` (SET LOCAL) before it writes outbox rows;
-- the relay then finds them by its regular poll instead of being woken.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('distlab.outbox_quiet', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
