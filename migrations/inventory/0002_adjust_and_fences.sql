-- Stock adjustments guarded by fencing tokens (the lock service's flash sale, seed section 一).

-- `POST /products/{sku}/adjust` applies a delta as given: the check ("is there stock left?") belongs to
-- the caller, under its lock — which is the point of the flash-sale scenario: without a lock, concurrent
-- read-check-write callers drive `available` below zero, and this constraint would hide that. The order
-- flows never do: their updates are conditional (`available >= quantity`).
ALTER TABLE products DROP CONSTRAINT products_available_check;

-- The highest fencing token seen per lock name; a write carrying a lower one is refused.
CREATE TABLE lock_fences (
    lock_name     text PRIMARY KEY,
    highest_token bigint NOT NULL CHECK (highest_token >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every applied adjustment, with the lock token it carried (NULL when unfenced).
CREATE TABLE stock_adjustments (
    id              bigserial PRIMARY KEY,
    sku             text NOT NULL REFERENCES products (sku) ON DELETE CASCADE,
    delta           integer NOT NULL,
    lock_name       text,
    fencing_token   bigint,
    available_after integer NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_adjustments_sku ON stock_adjustments (sku);
