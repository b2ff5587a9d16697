-- The inventory service's business data.

CREATE TABLE products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    -- Invariant: available + reserved = the stock set by the last PUT (nothing ships yet).
    available   integer NOT NULL CHECK (available >= 0),
    reserved    integer NOT NULL CHECK (reserved >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One decision per order, whatever message carried it: an order is reserved or rejected once.
CREATE TABLE order_outcomes (
    order_id   uuid PRIMARY KEY,
    outcome    text NOT NULL CHECK (outcome IN ('reserved', 'rejected')),
    reason     text,
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- What each reserved order holds.
CREATE TABLE reservations (
    order_id   uuid NOT NULL,
    sku        text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
