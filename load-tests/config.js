// Config reads and writes over the three Raft nodes, with a read-your-write check across nodes.
// needs: config-1 config-2 config-3
//
//   k6 run load-tests/config.js                      # RATE=200 operations/s for DURATION=30s
//   CONFIG_WRITE_SHARE=1 RATE=300 k6 run load-tests/config.js

import * as config from './lib/config.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(200, '30s');

export const options = {
  scenarios: { config: openScenario('run', rate, duration) },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    config.thresholds(),
  ),
  summaryTrendStats: TREND_STATS,
};

export function setup() {
  return { chaos: chaosState(), rate, duration, config: config.setup() };
}

export function run() {
  config.iteration();
}

export function teardown() {
  config.teardown();
}

export const handleSummary = summaryHandler('config');
