// Shared helpers of distlab's k6 scripts: where the services are, the open-model scenario, JSON requests,
// polling, and a look at the chaos sidecar before a run. Plain ES modules, no npm.

import http from 'k6/http';
import exec from 'k6/execution';
import { sleep } from 'k6';

/** An environment variable, or `fallback` when it is unset or empty. */
export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

/** A positive number from the environment; anything else stops the script at once. */
export function envNumber(name, fallback) {
  const raw = env(name, String(fallback));
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number, not ${JSON.stringify(raw)}`);
  }
  return value;
}

/** The local stack's ports (docs/architecture.md); each overridable with its own variable. */
export const urls = {
  gateway: env('GATEWAY_URL', 'http://127.0.0.1:8080'),
  order: env('ORDER_URL', 'http://127.0.0.1:8081'),
  inventory: env('INVENTORY_URL', 'http://127.0.0.1:8082'),
  coordinator: env('COORDINATOR_URL', 'http://127.0.0.1:8083'),
  lock: env('LOCK_URL', 'http://127.0.0.1:8084'),
  config: env('CONFIG_URLS', 'http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== ''),
  chaos: env('CHAOS_URL', 'http://127.0.0.1:8474'),
};

/** How long an order may take to become CONFIRMED or REJECTED (`SETTLE_S`, seconds). */
export const settleSeconds = envNumber('SETTLE_S', 10);

/** The trend statistics every summary shows (p50 is `med`). */
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

/**
 * An open-model scenario: `rate` iterations started per second for `duration`, whether or not the earlier
 * ones have finished (k6's constant-arrival-rate). VUs are only the pool the iterations run on; an
 * iteration that finds none free is counted in `dropped_iterations`.
 */
export function openScenario(fn, rate, duration, extra = {}) {
  return Object.assign(
    {
      executor: 'constant-arrival-rate',
      exec: fn,
      rate,
      timeUnit: '1s',
      duration,
      preAllocatedVUs: Math.max(2, rate),
      maxVUs: Math.max(10, Math.ceil(rate * 4)),
      gracefulStop: '10s',
    },
    extra,
  );
}

/** `RATE` (iterations per second) and `DURATION` (k6 duration, e.g. `30s`) with a script's defaults. */
export function rateAndDuration(defaultRate, defaultDuration) {
  const rate = envNumber('RATE', defaultRate);
  const duration = env('DURATION', defaultDuration);
  return { rate: Math.max(1, Math.round(rate)), duration };
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/** Parameters of a JSON request: the `req` tag names the step in thresholds and summaries. */
export function params(req, extra = {}) {
  const headers = Object.assign({}, JSON_HEADERS, extra.headers || {});
  const tags = Object.assign({ req }, extra.tags || {});
  return Object.assign({}, extra, { headers, tags });
}

export function postJson(url, body, req, extra = {}) {
  return http.post(url, JSON.stringify(body), params(req, extra));
}

export function putJson(url, body, req, extra = {}) {
  return http.put(url, JSON.stringify(body), params(req, extra));
}

/** The body as JSON, or null. */
export function json(response) {
  try {
    return response.json();
  } catch (_) {
    return null;
  }
}

/** A key no other iteration of any run uses: `<prefix>-<ms>-<vu>-<iteration>`. */
export function uniqueKey(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${exec.vu.idInTest}-${exec.scenario.iterationInTest}`;
}

/** One element of `items` at random. */
export function pick(items) {
  return items[Math.floor(Math.random() * items.length)];
}

/**
 * Calls `probe` every `intervalMs` until it returns a value other than undefined or `timeoutMs` have
 * passed since `startedAt`; returns `{value, elapsedMs}` (value undefined on time-out).
 */
export function pollUntil(probe, startedAt, timeoutMs, intervalMs) {
  for (;;) {
    const value = probe();
    const elapsedMs = Date.now() - startedAt;
    if (value !== undefined || elapsedMs >= timeoutMs) {
      return { value, elapsedMs };
    }
    sleep(intervalMs / 1000);
  }
}

/** Creates (or resets) products at the inventory; fails the run when one cannot be seeded. */
export function seedProducts(products) {
  for (const p of products) {
    const r = putJson(
      `${urls.inventory}/products/${p.sku}`,
      { name: p.name, price_cents: p.price_cents, stock: p.stock },
      'seed',
    );
    if (r.status !== 200) {
      throw new Error(`cannot seed ${p.sku} at ${urls.inventory}: ${r.status} ${r.body}`);
    }
  }
}

/** GET a product of the inventory, or null. */
export function product(sku) {
  const r = http.get(`${urls.inventory}/products/${sku}`, { tags: { req: 'product' } });
  return r.status === 200 ? json(r) : null;
}

/**
 * What the chaos sidecar says about the network before the run: active partitions and toxics, and the
 * switches (cap_mode, degrade). Measurements on a broken network mean something else, so this is warned
 * about and kept in the summary's setup data. A sidecar that does not answer is reported, not fatal.
 */
export function chaosState() {
  const state = { reachable: false, partitions: [], toxics: [], switches: {} };
  const partitions = http.get(`${urls.chaos}/partitions`, { tags: { req: 'chaos' } });
  if (partitions.status !== 200) {
    console.warn(`the chaos sidecar at ${urls.chaos} did not answer (${partitions.status}): faults unknown`);
    return state;
  }
  state.reachable = true;
  state.partitions = ((json(partitions) || {}).partitions || []).map((p) => p.name);
  const proxies = json(http.get(`${urls.chaos}/proxies`, { tags: { req: 'chaos' } })) || {};
  for (const [name, proxy] of Object.entries(proxies)) {
    for (const toxic of proxy.toxics || []) {
      state.toxics.push(`${name}: ${toxic.type}`);
    }
    if (proxy.enabled === false) {
      state.toxics.push(`${name}: disabled`);
    }
  }
  const switches = json(http.get(`${urls.chaos}/switches`, { tags: { req: 'chaos' } })) || {};
  for (const s of switches.switches || []) {
    state.switches[s.name] = s.value === undefined ? `${s.default} (default)` : s.value;
  }
  if (state.partitions.length > 0 || state.toxics.length > 0) {
    console.warn(
      `faults are active (partitions: ${state.partitions.join(', ') || 'none'}; toxics: ` +
        `${state.toxics.join(', ') || 'none'}): these numbers are not the healthy stack's`,
    );
  }
  return state;
}
