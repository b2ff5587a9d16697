-- Redelivery of OrderPlaced (services/order/src/redelivery.rs): an outbox order that has no answer by
-- `redeliver_at` gets its OrderPlaced sent again, in case the message was lost after it left the outbox
-- (a broker that came back without its data). `redeliveries` counts how often, and spaces the next try.
ALTER TABLE orders
    ADD COLUMN redeliver_at timestamptz,
    ADD COLUMN redeliveries integer NOT NULL DEFAULT 0;

-- Orders that wait for an answer at the time of this migration are checked at once.
UPDATE orders SET redeliver_at = now() WHERE status = 'PENDING' AND mode = 'outbox';

-- The redelivery sweep reads the due ones. `mode = 'outbox'` in the predicate keeps the planner from ever
-- choosing this index for the confirmation `UPDATE … WHERE id = … AND status = 'PENDING'` (see 0001).
CREATE INDEX orders_awaiting_answer ON orders (redeliver_at) WHERE status = 'PENDING' AND mode = 'outbox';
