// Distributed locks with fencing (docs/locks.md): each iteration takes a lock on one backend, writes
// through the inventory's fenced `adjust` with the lease's fencing token, and releases the lock. The
// backends take turns; LOCK_BACKENDS (default all four) and LOCK_NAMES (locks per backend, default 4)
// shape the load.

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { env, envNumber, json, postJson, seedProducts, uniqueKey, urls } from './common.js';

const ALL_BACKENDS = ['pg', 'redis', 'redlock', 'zookeeper'];
export const backends = env('LOCK_BACKENDS', ALL_BACKENDS.join(','))
  .split(',')
  .map((b) => b.trim())
  .filter((b) => b !== '');
for (const b of backends) {
  if (!ALL_BACKENDS.includes(b)) {
    throw new Error(`LOCK_BACKENDS: unknown backend ${b} (one of ${ALL_BACKENDS.join(', ')})`);
  }
}
const NAMES = envNumber('LOCK_NAMES', 4);
const STOCK = 1000000;
const TTL_MS = 5000;
const WAIT_MS = 2000;

/** The lock `n` of a backend; its name is also the fencing name and the SKU it protects. */
function lockName(backend, n) {
  return `load-lock-${backend}-${n}`;
}

/** Acquires that got the lock (a 409 lock_held after waiting WAIT_MS counts as not acquired). */
export const acquired = new Rate('lock_acquired');
/** Fenced writes the inventory accepted: a refusal (409 stale_fencing_token) means another holder wrote with a newer token while this one still thought it held the lock. */
export const fenced = new Rate('lock_fenced_write_accepted');
/** Releases that released the lease. */
export const released = new Rate('lock_released');
/** After the run, per lock: nobody holds it. */
export const free = new Rate('lock_free_after_run');

export function thresholds() {
  const t = {
    'http_req_duration{req:lock_acquire}': ['p(95)<500', 'p(99)<1500'],
    lock_acquired: ['rate>0.99'],
    lock_fenced_write_accepted: ['rate==1'],
    lock_released: ['rate>0.99'],
    lock_free_after_run: ['rate==1'],
  };
  // One sub-metric per backend, so that the summary shows each backend's latency.
  for (const b of backends) {
    t[`http_req_duration{req:lock_acquire,backend:${b}}`] = ['p(99)<2500'];
  }
  return t;
}

export function setup() {
  const products = [];
  for (const b of backends) {
    for (let n = 0; n < NAMES; n++) {
      products.push({ sku: lockName(b, n), name: `Load test: ${b} lock`, price_cents: 100, stock: STOCK });
    }
  }
  seedProducts(products);
  return { backends, names: NAMES };
}

const expected409 = http.expectedStatuses({ min: 200, max: 399 }, 409);

export function iteration() {
  const i = exec.scenario.iterationInTest;
  const backend = backends[i % backends.length];
  const name = lockName(backend, Math.floor(Math.random() * NAMES));
  const tags = { backend };
  const acquire = postJson(
    `${urls.lock}/locks/${name}/acquire`,
    { backend, owner: uniqueKey('k6'), ttl_ms: TTL_MS, wait_ms: WAIT_MS },
    'lock_acquire',
    { tags, responseCallback: expected409 },
  );
  const lease = json(acquire);
  const got = acquire.status === 200 && lease !== null && typeof lease.fencing_token === 'number';
  acquired.add(got, tags);
  check(acquire, { 'lock: acquired': () => got });
  if (!got) {
    if (acquire.status !== 409) {
      console.warn(`lock: ${backend} acquire answered ${acquire.status} ${String(acquire.body).slice(0, 300)}`);
    }
    return;
  }
  const write = postJson(
    `${urls.inventory}/products/${name}/adjust`,
    { delta: -1, lock: { name, token: lease.fencing_token } },
    'lock_fenced_write',
    { tags, responseCallback: expected409 },
  );
  const accepted = write.status === 200;
  fenced.add(accepted, tags);
  check(write, { 'lock: fenced write accepted': () => accepted });
  if (!accepted) {
    console.warn(`lock: ${backend} fenced write with token ${lease.fencing_token} answered ${write.status} ${String(write.body).slice(0, 300)}`);
  }
  const release = postJson(
    `${urls.lock}/locks/${name}/release`,
    { backend, lease_id: lease.lease_id },
    'lock_release',
    { tags },
  );
  const out = json(release);
  const ok = release.status === 200 && out !== null && out.released === true;
  released.add(ok, tags);
  check(release, { 'lock: released': () => ok });
}

/** Every lock of the run is free once the load stops. */
export function teardown() {
  for (const b of backends) {
    for (let n = 0; n < NAMES; n++) {
      const name = lockName(b, n);
      const r = http.get(`${urls.lock}/locks/${name}?backend=${b}`, { tags: { req: 'lock_check' } });
      const state = json(r);
      const ok = r.status === 200 && state !== null && !state.holder;
      free.add(ok, { backend: b });
      if (!ok) {
        console.error(`lock: ${name} on ${b} is not free after the run: ${r.status} ${String(r.body).slice(0, 300)}`);
      }
    }
  }
}
