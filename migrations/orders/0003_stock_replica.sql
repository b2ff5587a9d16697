-- The order side's stock replica (CAP, docs/cap.md): soft state kept from the inventory's stock feed
-- (`StockChanged` on inventory-events). A change is applied only when its version is newer than the row's,
-- so redelivered or reordered events change nothing.
CREATE TABLE stock_replica (
    sku        text PRIMARY KEY,
    available  integer NOT NULL,
    reserved   integer NOT NULL,
    version    bigint NOT NULL,
    -- When the inventory made this version (the replica's value is true as of then).
    changed_at timestamptz NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Units promised by orders admitted on the replica in AP mode and not decided yet: the replica's
-- `available` minus these is what AP may still promise. Removed when the order is decided.
CREATE TABLE stock_holds (
    order_id uuid NOT NULL,
    sku      text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX stock_holds_sku ON stock_holds (sku);

-- An order admitted on the replica's word (AP) that the inventory then cannot cover ends REJECTED with
-- `oversold_during_partition` instead of `insufficient_stock`: the customer was told yes.
ALTER TABLE orders ADD COLUMN admitted_on_replica boolean NOT NULL DEFAULT false;
