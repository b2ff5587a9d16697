// The end of a run: the whole summary as JSON in load-tests/results/ (git-ignored), and a text summary on
// stdout. k6's own text summary lives in a jslib module that is imported from a URL; distlab's scripts
// import nothing from the network, so the text below is this module's: thresholds first, then every metric.

import { env } from './common.js';

/** `2026-11-29T17-05-03Z`: a UTC time that is also a file name. */
function stamp(date) {
  return date.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

/** Where the JSON summary goes: `RESULT_FILE`, else `<RESULTS_DIR>/<name>-<UTC time>.json`. */
export function resultFile(name, now = new Date()) {
  const explicit = env('RESULT_FILE', '');
  if (explicit !== '') {
    return explicit;
  }
  return `${env('RESULTS_DIR', 'load-tests/results')}/${name}-${stamp(now)}.json`;
}

function ms(value) {
  if (value === undefined || value === null) {
    return '-';
  }
  return value >= 1000 ? `${(value / 1000).toFixed(2)}s` : `${value.toFixed(value < 10 ? 2 : 1)}ms`;
}

function number(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

/** One metric's values as one line of text. */
function describe(metric) {
  const v = metric.values;
  switch (metric.type) {
    case 'trend': {
      const fmt = metric.contains === 'time' ? ms : (x) => (x === undefined ? '-' : number(x));
      return `p50=${fmt(v.med)} p95=${fmt(v['p(95)'])} p99=${fmt(v['p(99)'])} avg=${fmt(v.avg)} max=${fmt(v.max)}`;
    }
    case 'rate':
      return `${(v.rate * 100).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
    case 'counter':
      return `${v.count} (${v.rate.toFixed(1)}/s)`;
    case 'gauge':
      return `${number(v.value)}`;
    default:
      return JSON.stringify(v);
  }
}

/** The text summary: the run, the thresholds with ✓ or ✗, then each metric. */
export function textSummary(name, data) {
  const lines = [];
  const seconds = (data.state.testRunDurationMs / 1000).toFixed(1);
  lines.push(`distlab load test "${name}": ${seconds} s`);
  const metrics = Object.entries(data.metrics).sort(([a], [b]) => a.localeCompare(b));
  const thresholds = [];
  for (const [metricName, metric] of metrics) {
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      thresholds.push(`  ${result.ok ? '✓' : '✗'} ${metricName} ${expr}   (${describe(metric)})`);
    }
  }
  if (thresholds.length > 0) {
    lines.push('thresholds:');
    lines.push(...thresholds);
  }
  lines.push('metrics:');
  const width = Math.max(...metrics.map(([n]) => n.length));
  for (const [metricName, metric] of metrics) {
    lines.push(`  ${metricName.padEnd(width)}  ${describe(metric)}`);
  }
  const failed = thresholds.filter((t) => t.startsWith('  ✗')).length;
  lines.push(failed === 0 ? 'all thresholds met' : `${failed} threshold(s) missed`);
  return lines.join('\n');
}

/** A `handleSummary` for the script `name`: the JSON file and the text on stdout. */
export function summaryHandler(name) {
  return function handleSummary(data) {
    const file = resultFile(name);
    const text = textSummary(name, data);
    return {
      stdout: `\n${text}\nJSON summary: ${file}\n\n`,
      [file]: JSON.stringify(Object.assign({ script: name, finished_at: new Date().toISOString() }, data), null, 2),
    };
  };
}
