-- The stock feed (CAP, docs/cap.md): every change of a product's stock, whatever made it (a reservation by
-- either order flow, an adjustment, a PUT), gets a new per-SKU version; the version a transaction leaves
-- gets a row in the version history and a `StockChanged` message in the outbox — in that transaction, so
-- the order service's replica can neither miss a change nor see one that did not commit.

ALTER TABLE products ADD COLUMN stock_version bigint NOT NULL DEFAULT 0;

-- Every version a transaction left (its last per SKU — the only one anybody could see): the CAP scenario judges stale reads against this table. When a
-- version became visible is its row's commit timestamp (`pg_xact_commit_timestamp(xmin)`, with
-- `track_commit_timestamp = on`, as the local stack runs PostgreSQL); `recorded_at` is when the change was
-- made, which for a 2PC branch can be long before its COMMIT PREPARED.
CREATE TABLE stock_versions (
    sku         text NOT NULL,
    version     bigint NOT NULL,
    available   integer NOT NULL,
    reserved    integer NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (sku, version)
);

-- Where the feed is published: one row, written by the inventory service at start-up from its
-- configuration (INVENTORY_EVENTS_TOPIC). Without it the trigger publishes to `inventory-events`.
CREATE TABLE stock_feed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    topic    text NOT NULL
);

CREATE FUNCTION stock_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.stock_version := 1;
    ELSIF NEW.available IS DISTINCT FROM OLD.available
       OR NEW.reserved IS DISTINCT FROM OLD.reserved
       OR NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN
        -- A PUT that sets the same numbers still resets the product: it is a change too.
        NEW.stock_version := OLD.stock_version + 1;
    ELSE
        NEW.stock_version := OLD.stock_version;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER stock_version_bump BEFORE INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION stock_version_bump();

-- Published once per SKU per transaction, with the row as it is when the transaction ends: a deferred
-- constraint trigger runs at COMMIT (or PREPARE TRANSACTION), once per change, and every run after the
-- first for a SKU finds its final version already recorded. A consumer batch that reserves 100 orders on
-- 40 SKUs publishes 40 messages, not 100 — only the last version of a transaction is ever visible anyway.
CREATE FUNCTION stock_feed_publish() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    feed_topic text := coalesce((SELECT topic FROM stock_feed), 'inventory-events');
    recorded   timestamptz := clock_timestamp();
    message    uuid := gen_random_uuid();
    final      products%ROWTYPE;
BEGIN
    SELECT * INTO final FROM products WHERE sku = NEW.sku;
    IF NOT FOUND OR EXISTS (
        SELECT 1 FROM stock_versions WHERE sku = final.sku AND version = final.stock_version
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO stock_versions (sku, version, available, reserved, recorded_at)
    VALUES (final.sku, final.stock_version, final.available, final.reserved, recorded);
    INSERT INTO outbox (message_id, topic, message_key, envelope)
    VALUES (message, feed_topic, final.sku, jsonb_build_object(
        'message_id', message,
        'type', 'StockChanged',
        'occurred_at', to_char(recorded AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'payload', jsonb_build_object(
            'sku', final.sku,
            'available', final.available,
            'reserved', final.reserved,
            'version', final.stock_version,
            'changed_at', to_char(recorded AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))));
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER stock_feed_publish AFTER INSERT OR UPDATE ON products
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION stock_feed_publish();

-- Products that exist already get their first version (and their first StockChanged) now.
UPDATE products SET updated_at = now();
