// 2PC orders: each order placed through the coordinator and answered 201 CONFIRMED or 409 REJECTED.
// needs: order inventory coordinator
//
//   k6 run load-tests/2pc.js                      # RATE=20 orders/s for DURATION=30s
//   RATE=60 DURATION=60s k6 run load-tests/2pc.js

import * as twopc from './lib/twopc.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(20, '30s');

export const options = {
  scenarios: { twopc: openScenario('run', rate, duration) },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    twopc.thresholds(),
  ),
  summaryTrendStats: TREND_STATS,
};

export function setup() {
  return { chaos: chaosState(), rate, duration, twopc: twopc.setup() };
}

export function run() {
  twopc.iteration();
}

export function teardown() {
  twopc.teardown();
}

export const handleSummary = summaryHandler('2pc');
