// Outbox orders: each order placed (202 PENDING) and followed until CONFIRMED or REJECTED.
// needs: order inventory
//
//   k6 run load-tests/outbox.js                      # RATE=50 orders/s for DURATION=30s
//   RATE=200 DURATION=60s SETTLE_S=5 k6 run load-tests/outbox.js

import * as outbox from './lib/outbox.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(50, '30s');

export const options = {
  scenarios: { outbox: openScenario('run', rate, duration) },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    outbox.thresholds(),
  ),
  summaryTrendStats: TREND_STATS,
};

export function setup() {
  return { chaos: chaosState(), rate, duration, outbox: outbox.setup() };
}

export function run() {
  outbox.iteration();
}

export function teardown() {
  outbox.teardown();
}

export const handleSummary = summaryHandler('outbox');
