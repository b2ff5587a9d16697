// Smoke: every flow at a low rate for a few seconds (outbox, 2PC, locks, config, storefront), each outcome checked.
// needs: gateway order inventory coordinator lock config-1 config-2 config-3 chaos
//
//   k6 run load-tests/smoke.js                      # RATE=1 iteration/s per flow for DURATION=10s
//
// Every flow runs at once, each in its own scenario, with the flows' correctness thresholds and loose
// latency ones: it answers "does every user-facing flow work under a little concurrent load?", not "how
// fast". Iterations alternate the paths that a flow's random mix would visit rarely (a rejected order,
// a config write, a checkout), so a 10 s run takes each of them several times.

import http from 'k6/http';
import exec from 'k6/execution';
import { Rate } from 'k6/metrics';
import * as outbox from './lib/outbox.js';
import * as twopc from './lib/twopc.js';
import * as locks from './lib/locks.js';
import * as config from './lib/config.js';
import * as storefront from './lib/storefront.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration, urls } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(1, '10s');
const FLOWS = { outbox, twopc, locks, config, storefront };

/** A flow's thresholds without its latency ones (those are for the load scripts). */
function correctness(thresholds) {
  return Object.fromEntries(Object.entries(thresholds).filter(([metric]) => !metric.startsWith('http_req_duration')));
}

export const options = {
  scenarios: Object.fromEntries(Object.keys(FLOWS).map((name) => [name, openScenario(`run_${name}`, rate, duration)])),
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate==1'],
      http_req_duration: ['p(99)<2000'],
      smoke_healthy: ['rate==1'],
    },
    ...Object.values(FLOWS).map((flow) => correctness(flow.thresholds())),
  ),
  summaryTrendStats: TREND_STATS,
};

/** Every service answered GET /healthz before the run. */
const healthy = new Rate('smoke_healthy');

export function setup() {
  const services = {
    gateway: urls.gateway,
    order: urls.order,
    inventory: urls.inventory,
    coordinator: urls.coordinator,
    lock: urls.lock,
    chaos: urls.chaos,
  };
  urls.config.forEach((u, i) => {
    services[`config-${i + 1}`] = u;
  });
  for (const [name, base] of Object.entries(services)) {
    const r = http.get(`${base}/healthz`, { tags: { req: 'healthz' } });
    healthy.add(r.status === 200, { service: name });
    if (r.status !== 200) {
      console.error(`${name} at ${base} is not healthy: ${r.status} ${r.error || ''}`);
    }
  }
  return {
    chaos: chaosState(),
    rate,
    duration,
    outbox: outbox.setup(),
    twopc: twopc.setup(),
    locks: locks.setup(),
    config: config.setup(),
    storefront: storefront.setup(),
  };
}

/** Every fifth order of the run asks for the SKU without stock. */
function rejectThisOne() {
  return exec.scenario.iterationInTest % 5 === 4;
}

export function run_outbox() {
  outbox.iteration(rejectThisOne());
}

export function run_twopc() {
  twopc.iteration(rejectThisOne());
}

export function run_locks() {
  locks.iteration();
}

export function run_config() {
  config.iteration(exec.scenario.iterationInTest % 2 === 0);
}

export function run_storefront(data) {
  storefront.iteration(data, exec.scenario.iterationInTest % 2 === 0);
}

export function teardown(data) {
  outbox.teardown();
  twopc.teardown();
  locks.teardown();
  config.teardown();
  storefront.teardown(data);
}

export const handleSummary = summaryHandler('smoke');
