// The Raft config service (docs/raft-config.md): reads and writes of a few keys, spread over the three
// nodes (a follower forwards writes and linearizable reads to the leader). After each write, a
// linearizable read on another node must see it: read-your-write across nodes, which Raft's ReadIndex
// promises. CONFIG_WRITE_SHARE (default 0.2) is the share of writes; a tenth of the reads are `stale`.

import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { env, json, pick, putJson, uniqueKey, urls } from './common.js';

const KEYS = Array.from({ length: 16 }, (_, n) => `load-tests/k6/${n}`);
const WRITE_SHARE = Number(env('CONFIG_WRITE_SHARE', '0.2'));
if (!(WRITE_SHARE >= 0 && WRITE_SHARE <= 1)) {
  throw new Error('CONFIG_WRITE_SHARE must be between 0 and 1');
}

/** Linearizable reads on another node that saw the write just acknowledged (its revision or a later one). */
export const readYourWrite = new Rate('config_read_your_write');

export function thresholds() {
  return {
    'http_req_duration{req:config_read}': ['p(95)<100', 'p(99)<300'],
    'http_req_duration{req:config_write}': ['p(95)<200', 'p(99)<500'],
    config_read_your_write: ['rate==1'],
  };
}

function read(node, key, consistency, req = 'config_read') {
  return http.get(`${node}/v1/kv/${key}?consistency=${consistency}`, {
    tags: { req, consistency },
  });
}

export function setup() {
  for (const key of KEYS) {
    const r = putJson(`${pick(urls.config)}/v1/kv/${key}`, { value: { seeded: true } }, 'seed');
    if (r.status !== 200) {
      throw new Error(`cannot write ${key} to the config service: ${r.status} ${r.body}`);
    }
  }
  return { keys: KEYS.length };
}

/** One read, or one write and a read after it (`write`; default: CONFIG_WRITE_SHARE at random). */
export function iteration(write = Math.random() < WRITE_SHARE) {
  const key = pick(KEYS);
  const node = pick(urls.config);
  if (!write) {
    const consistency = Math.random() < 0.1 ? 'stale' : 'linearizable';
    const r = read(node, key, consistency);
    if (!check(r, { 'config: read 200': (x) => x.status === 200 })) {
      console.warn(`config: ${consistency} read of ${key} on ${node} answered ${r.status} ${String(r.body).slice(0, 200)}`);
    }
    return;
  }
  const w = putJson(`${node}/v1/kv/${key}`, { value: { writer: uniqueKey('k6'), at: Date.now() } }, 'config_write');
  const written = json(w);
  if (!check(w, { 'config: write 200': (x) => x.status === 200 && written !== null })) {
    return;
  }
  const others = urls.config.filter((n) => n !== node);
  const r = read(others.length > 0 ? pick(others) : node, key, 'linearizable', 'config_read_after_write');
  const seen = json(r);
  if (r.status !== 200 || seen === null) {
    check(r, { 'config: read after write 200': () => false });
    return;
  }
  const ok = seen.revision >= written.revision;
  readYourWrite.add(ok);
  check(seen, { 'config: read after write sees it': () => ok });
  if (!ok) {
    console.error(`config: wrote ${key} at revision ${written.revision} on ${node}, then read revision ${seen.revision}`);
  }
}

/** The run's keys are deleted: the config service is left as it was found. */
export function teardown() {
  for (const key of KEYS) {
    http.del(`${urls.config[0]}/v1/kv/${key}`, null, {
      tags: { req: 'cleanup' },
      responseCallback: http.expectedStatuses(200, 204, 404),
    });
  }
}
