// Storefront: browse the catalog and product pages, and buy through the checkout form (303), following the order.
// needs: gateway order inventory
//
//   k6 run load-tests/storefront.js                      # RATE=20 customers/s for DURATION=30s
//   CHECKOUT_SHARE=0.5 RATE=50 k6 run load-tests/storefront.js

import * as storefront from './lib/storefront.js';
import { TREND_STATS, chaosState, openScenario, rateAndDuration } from './lib/common.js';
import { summaryHandler } from './lib/summary.js';

const { rate, duration } = rateAndDuration(20, '30s');

export const options = {
  scenarios: { storefront: openScenario('run', rate, duration) },
  thresholds: Object.assign(
    {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    storefront.thresholds(),
  ),
  summaryTrendStats: TREND_STATS,
};

export function setup() {
  return { chaos: chaosState(), rate, duration, storefront: storefront.setup() };
}

export function run(data) {
  storefront.iteration(data);
}

export function teardown(data) {
  storefront.teardown(data);
}

export const handleSummary = summaryHandler('storefront');
