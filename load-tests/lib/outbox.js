// The outbox flow (docs/outbox.md): POST /orders with "mode": "outbox" answers 202 PENDING at once; the
// order turns CONFIRMED or REJECTED when the inventory's answer has come back through Kafka. Each
// iteration places one order and follows it until it is final or SETTLE_S seconds have passed.

import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { json, pick, pollUntil, postJson, product, seedProducts, settleSeconds, uniqueKey, urls } from './common.js';

/** Plenty of stock: these orders must be CONFIRMED. */
const PLENTY = ['load-outbox-0', 'load-outbox-1', 'load-outbox-2', 'load-outbox-3'];
/** No stock: these orders must be REJECTED insufficient_stock. */
const EMPTY = 'load-outbox-empty';
const STOCK = 1000000;
/** The share of orders for the empty SKU. */
const REJECT_SHARE = 0.05;

/** Orders final (CONFIRMED or REJECTED) within SETTLE_S of being placed. */
export const settled = new Rate('outbox_settled');
/** Orders that ended as they must: CONFIRMED for stocked SKUs, REJECTED insufficient_stock for the empty one. */
export const outcomeOk = new Rate('outbox_outcome_ok');
/** From sending the POST to first seeing the order final (resolution: the 50 ms poll interval). */
export const settleTime = new Trend('outbox_settle_time', true);
/** After the run, per stocked SKU: available + reserved = the seeded stock. */
export const conserved = new Rate('outbox_stock_conserved');

export function thresholds() {
  return {
    'http_req_duration{req:outbox_place}': ['p(95)<300', 'p(99)<1000'],
    outbox_settled: ['rate>0.99'],
    outbox_outcome_ok: ['rate>0.99'],
    outbox_settle_time: ['p(95)<2000', 'p(99)<5000'],
    outbox_stock_conserved: ['rate==1'],
  };
}

export function setup() {
  seedProducts(PLENTY.map((sku) => ({ sku, name: 'Load test: outbox', price_cents: 100, stock: STOCK })));
  seedProducts([{ sku: EMPTY, name: 'Load test: outbox, no stock', price_cents: 100, stock: 0 }]);
  return { skus: PLENTY };
}

/** One order; `reject` (default: one in twenty at random) orders the SKU without stock. */
export function iteration(reject = Math.random() < REJECT_SHARE) {
  const sku = reject ? EMPTY : pick(PLENTY);
  const started = Date.now();
  const placed = postJson(
    `${urls.order}/orders`,
    { customer_id: 'load-k6', items: [{ sku, quantity: 1 }], mode: 'outbox' },
    'outbox_place',
    { headers: { 'Idempotency-Key': uniqueKey('k6-outbox') } },
  );
  const order = json(placed);
  const accepted = check(placed, {
    'outbox: 202 PENDING': (r) => r.status === 202 && order !== null && order.status === 'PENDING',
  });
  if (!accepted) {
    settled.add(false);
    outcomeOk.add(false);
    return;
  }
  const { value: final, elapsedMs } = pollUntil(
    () => {
      const r = http.get(`${urls.order}/orders/${order.id}`, { tags: { req: 'outbox_poll' } });
      const seen = json(r);
      return seen !== null && (seen.status === 'CONFIRMED' || seen.status === 'REJECTED') ? seen : undefined;
    },
    started,
    settleSeconds * 1000,
    50,
  );
  settled.add(final !== undefined);
  if (final === undefined) {
    outcomeOk.add(false);
    return;
  }
  settleTime.add(elapsedMs);
  const ok = reject
    ? final.status === 'REJECTED' && final.reason === 'insufficient_stock'
    : final.status === 'CONFIRMED';
  outcomeOk.add(ok);
  check(final, { 'outbox: final as expected': () => ok });
}

/** Every stocked SKU adds up: available + reserved = the seeded stock (orders move units, never lose them). */
export function teardown() {
  for (const sku of PLENTY) {
    const p = product(sku);
    const ok = p !== null && p.available + p.reserved === STOCK;
    conserved.add(ok);
    if (!ok) {
      console.error(`outbox: ${sku} does not add up: ${JSON.stringify(p)} (seeded ${STOCK})`);
    }
  }
}
