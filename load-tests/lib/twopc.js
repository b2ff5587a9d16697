// Two-phase commit orders (docs/two-phase-commit.md): POST /orders with "mode": "2pc" runs the whole
// transaction through the coordinator before answering: 201 CONFIRMED, or 409 with the order REJECTED.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';
import { json, pick, postJson, product, seedProducts, uniqueKey, urls } from './common.js';

/** Plenty of stock, spread over eight rows: a prepared branch holds its product's row lock until phase 2. */
const PLENTY = ['0', '1', '2', '3', '4', '5', '6', '7'].map((n) => `load-2pc-${n}`);
/** No stock: these orders must be refused 409 insufficient_stock. */
const EMPTY = 'load-2pc-empty';
const STOCK = 1000000;
const REJECT_SHARE = 0.05;

/** Orders answered with their final outcome: 201 CONFIRMED for stocked SKUs, 409 insufficient_stock for the empty one. */
export const decided = new Rate('twopc_decided_as_expected');
/** After the run: no transaction left undecided or unfinished at the coordinator, nothing prepared at a participant. */
export const finished = new Rate('twopc_all_finished');
/** After the run, per stocked SKU: available + reserved = the seeded stock. */
export const conserved = new Rate('twopc_stock_conserved');

export function thresholds() {
  return {
    'http_req_duration{req:twopc_place}': ['p(95)<500', 'p(99)<1500'],
    twopc_decided_as_expected: ['rate>0.99'],
    twopc_all_finished: ['rate==1'],
    twopc_stock_conserved: ['rate==1'],
  };
}

export function setup() {
  seedProducts(PLENTY.map((sku) => ({ sku, name: 'Load test: 2PC', price_cents: 100, stock: STOCK })));
  seedProducts([{ sku: EMPTY, name: 'Load test: 2PC, no stock', price_cents: 100, stock: 0 }]);
  return { skus: PLENTY };
}

const expected409 = http.expectedStatuses({ min: 200, max: 399 }, 409);

/** One order; `reject` (default: one in twenty at random) orders the SKU without stock. */
export function iteration(reject = Math.random() < REJECT_SHARE) {
  const sku = reject ? EMPTY : pick(PLENTY);
  const r = postJson(
    `${urls.order}/orders`,
    { customer_id: 'load-k6', items: [{ sku, quantity: 1 }], mode: '2pc' },
    'twopc_place',
    { headers: { 'Idempotency-Key': uniqueKey('k6-2pc') }, responseCallback: expected409 },
  );
  const body = json(r);
  const ok = reject
    ? r.status === 409 && body !== null && body.error && body.error.code === 'insufficient_stock'
    : r.status === 201 && body !== null && body.status === 'CONFIRMED';
  decided.add(ok);
  check(r, { '2pc: decided as expected': () => ok });
  if (!ok && r.status !== 0) {
    console.warn(`2pc: ${sku} answered ${r.status} ${String(r.body).slice(0, 300)}`);
  }
}

/** The transactions and prepared branches still open, as a list of strings (empty when all is finished). */
function openWork() {
  const open = [];
  for (const state of ['PREPARING', 'COMMITTING', 'ABORTING']) {
    const r = http.get(`${urls.coordinator}/transactions?state=${state}&limit=500`, { tags: { req: 'twopc_check' } });
    const list = (json(r) || {}).transactions;
    if (r.status !== 200 || !Array.isArray(list)) {
      open.push(`coordinator ${state}: no answer (${r.status})`);
    } else if (list.length > 0) {
      open.push(`coordinator ${state}: ${list.length}`);
    }
  }
  for (const [participant, base] of [['order', urls.order], ['inventory', urls.inventory]]) {
    const r = http.get(`${base}/2pc`, { tags: { req: 'twopc_check' } });
    const prepared = (json(r) || {}).prepared;
    if (r.status !== 200 || !Array.isArray(prepared)) {
      open.push(`${participant} prepared: no answer (${r.status})`);
    } else if (prepared.length > 0) {
      open.push(`${participant} prepared: ${prepared.length}`);
    }
  }
  return open;
}

/**
 * Once the load stops, every transaction must be finished within 10 s (recovery runs every second) and
 * every stocked SKU must add up.
 */
export function teardown() {
  let open = openWork();
  for (let i = 0; i < 20 && open.length > 0; i++) {
    sleep(0.5);
    open = openWork();
  }
  finished.add(open.length === 0);
  if (open.length > 0) {
    console.error(`2pc: still open 10 s after the load: ${open.join('; ')}`);
  }
  for (const sku of PLENTY) {
    const p = product(sku);
    const ok = p !== null && p.available + p.reserved === STOCK;
    conserved.add(ok);
    if (!ok) {
      console.error(`2pc: ${sku} does not add up: ${JSON.stringify(p)} (seeded ${STOCK})`);
    }
  }
}
