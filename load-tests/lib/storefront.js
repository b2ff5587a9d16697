// The storefront (docs/base.md): customers browse the catalog and product pages of the gateway, and some
// buy through the product page's form (POST /checkout, a 303 to the order page), then follow their order
// through GET /api/orders/{id} as the order page's script does. CHECKOUT_SHARE (default 0.2) is the share
// of iterations that buy.
//
// Buying takes real units from the shop's `shop-…` products: setup() notes each product's stock and
// teardown() puts it back (PUT at the inventory: the same name, price and available units; reserved 0).

import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { env, json, pick, pollUntil, product, putJson, settleSeconds, uniqueKey, urls } from './common.js';

const CHECKOUT_SHARE = Number(env('CHECKOUT_SHARE', '0.2'));
if (!(CHECKOUT_SHARE >= 0 && CHECKOUT_SHARE <= 1)) {
  throw new Error('CHECKOUT_SHARE must be between 0 and 1');
}

/** Pages served full (not degraded: over the limit, promotion, or a dependency unavailable). */
export const fullPages = new Rate('storefront_page_full');
/** Checkouts answered 303 to an order page. */
export const checkoutAccepted = new Rate('storefront_checkout_accepted');
/** Accepted checkouts whose order is CONFIRMED or REJECTED within SETTLE_S, as its page would show. */
export const orderSettled = new Rate('storefront_order_settled');
/** From the checkout's POST to the order seen final. */
export const orderSettleTime = new Trend('storefront_order_settle_time', true);

export function thresholds() {
  return {
    'http_req_duration{req:shop_catalog}': ['p(95)<300', 'p(99)<1000'],
    'http_req_duration{req:shop_product}': ['p(95)<300', 'p(99)<1000'],
    'http_req_duration{req:shop_checkout}': ['p(95)<500', 'p(99)<1500'],
    storefront_page_full: ['rate>0.95'],
    storefront_checkout_accepted: ['rate>0.99'],
    storefront_order_settled: ['rate>0.99'],
  };
}

/** The shop's catalog, and each product's stock at the inventory so that teardown can put it back. */
export function setup() {
  const r = http.get(`${urls.gateway}/api/catalog`, { tags: { req: 'setup' } });
  const catalog = json(r);
  if (r.status !== 200 || catalog === null || !Array.isArray(catalog.products) || catalog.products.length === 0) {
    throw new Error(`the storefront at ${urls.gateway} has no catalog: ${r.status} ${String(r.body).slice(0, 300)}`);
  }
  const before = [];
  for (const p of catalog.products) {
    const stock = product(p.sku);
    if (stock !== null) {
      before.push({ sku: stock.sku, name: stock.name, price_cents: stock.price_cents, available: stock.available });
    }
  }
  return { skus: catalog.products.map((p) => p.sku), before };
}

function page(url, req) {
  const r = http.get(url, { tags: { req } });
  const kind = r.headers['X-Distlab-Page'];
  check(r, { [`shop: ${req} 200`]: (x) => x.status === 200 });
  if (r.status === 200) {
    fullPages.add(kind === 'full', { reason: r.headers['X-Distlab-Degraded-Because'] || 'none' });
  }
  return r;
}

/** A customer who browses, or (`buy`; default: CHECKOUT_SHARE at random) buys one unit. */
export function iteration(data, buy = Math.random() < CHECKOUT_SHARE) {
  const sku = pick(data.storefront.skus);
  if (!buy) {
    page(`${urls.gateway}/`, 'shop_catalog');
    page(`${urls.gateway}/products/${sku}`, 'shop_product');
    return;
  }
  const productPage = page(`${urls.gateway}/products/${sku}`, 'shop_product');
  const key = /name="idempotency_key" value="([^"]+)"/.exec(String(productPage.body));
  const started = Date.now();
  const r = http.post(
    `${urls.gateway}/checkout`,
    { sku, quantity: '1', customer_id: 'load-k6', idempotency_key: key ? key[1] : uniqueKey('k6-shop') },
    { redirects: 0, tags: { req: 'shop_checkout' } },
  );
  const location = r.headers.Location || '';
  const id = /^\/orders\/([0-9a-f-]{36})$/.exec(location);
  const accepted = r.status === 303 && id !== null;
  checkoutAccepted.add(accepted);
  check(r, { 'shop: checkout 303 to the order page': () => accepted });
  if (!accepted) {
    console.warn(`shop: checkout of ${sku} answered ${r.status} ${String(r.body).slice(0, 200)}`);
    return;
  }
  const { value: final, elapsedMs } = pollUntil(
    () => {
      const o = json(http.get(`${urls.gateway}/api/orders/${id[1]}`, { tags: { req: 'shop_order_poll' } }));
      return o !== null && (o.status === 'CONFIRMED' || o.status === 'REJECTED') ? o : undefined;
    },
    started,
    settleSeconds * 1000,
    100,
  );
  orderSettled.add(final !== undefined);
  if (final !== undefined) {
    orderSettleTime.add(elapsedMs);
  }
}

/** Each shop product gets back the available stock it had before the run. */
export function teardown(data) {
  for (const p of data.storefront.before) {
    const r = putJson(
      `${urls.inventory}/products/${p.sku}`,
      { name: p.name, price_cents: p.price_cents, stock: p.available },
      'cleanup',
    );
    if (r.status !== 200) {
      console.error(`shop: cannot put back the stock of ${p.sku}: ${r.status} ${r.body}`);
    }
  }
}
