// Locks: acquire, a fenced write at the inventory with the fencing token, release; the four backends in turn.
// needs: lock inventory
//
//   k6 run load-tests/locks.js                      # RATE=40 lock cycles/s for DURATION=30s
//   LOCK_BACKENDS=zookeeper LOCK_NAMES=1 RATE=20 k6 run load-tests/locks.js

import * as locks from './lib/locks.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(40, '30s');

export const options = {
  scenarios: { locks: openScenario('run', rate, duration) },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    locks.thresholds(),
  ),
  summaryTrendStats: TREND_STATS,
};

export function setup() {
  return { chaos: chaosState(), rate, duration, locks: locks.setup() };
}

export function run() {
  locks.iteration();
}

export function teardown() {
  locks.teardown();
}

export const handleSummary = summaryHandler('locks');
