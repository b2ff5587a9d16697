-- The local message table (outbox) and the consumer's bookkeeping, in every service database that takes part
-- in the outbox flow. Applied by `distlab_messaging::service::connect` with its own migrations table
-- (`_sqlx_migrations_messaging`), beside the service's own migrations. See shared/messaging for the protocol.
-- An outbox row is deleted once Kafka acknowledged it, so the table holds exactly what is still to deliver.

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid NOT NULL UNIQUE,
    topic           text NOT NULL,
    message_key     text NOT NULL,
    envelope        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);

-- Wake the relays when rows commit (one notification per statement; Postgres folds duplicates per transaction).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Every message a consumer applied, so a redelivery is recognised and skipped.
CREATE TABLE processed_messages (
    consumer     text NOT NULL,
    message_id   uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Messages that can never be applied (not an envelope, a payload that does not parse): kept, not lost.
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer        text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    payload         bytea NOT NULL,
    error           text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- A redelivered batch does not store the same dead letter twice.
    UNIQUE (consumer, topic, kafka_partition, kafka_offset)
);
