-- The W3C trace context of the span that wrote an outbox row (docs/observability.md, "Traces"): the relay's
-- publish span continues that trace. Nullable: rows written before this column, or by a service that does
-- not trace, have none and are published as before.
ALTER TABLE outbox ADD COLUMN traceparent text;
