// Throughput over time, drawn as SVG with DOM calls (no markup strings, no inline styles: the
// colours come from app.css classes). The samples are the page's own: /stats is polled and
// each answer's 5-minute throughput is kept here, in this tab, for the last MAX samples.

import {s} from './dom.js';

const KEY = 'jobs.samples';
const MAX = 120;
const W = 320;
const H = 64;

export function loadSamples() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(KEY) || '[]');
    return Array.isArray(kept) ? kept.filter((p) => Array.isArray(p) && p.length === 2) : [];
  } catch {
    return [];
  }
}

export function addSample(samples, at, value) {
  samples.push([at, value]);
  while (samples.length > MAX) samples.shift();
  sessionStorage.setItem(KEY, JSON.stringify(samples));
}

export function sparkline(samples) {
  const values = samples.map((p) => p[1]);
  const top = Math.max(1, ...values);
  const step = samples.length > 1 ? W / (samples.length - 1) : 0;
  const xy = values.map((v, i) => [
    (samples.length > 1 ? i * step : W).toFixed(1),
    (H - 4 - (v / top) * (H - 8)).toFixed(1),
  ]);
  const now = values.length ? values[values.length - 1] : 0;
  const label = values.length
    ? `Throughput, last ${values.length} samples: now ${now.toFixed(1)}, ` +
      `lowest ${Math.min(...values).toFixed(1)}, highest ${Math.max(...values).toFixed(1)} jobs per minute`
    : 'Throughput: no samples yet';
  const svg = s('svg', {
    class: 'spark', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'none',
  }, s('title', {}, label),
  s('line', {class: 'spark-base', x1: 0, y1: H - 4, x2: W, y2: H - 4}));
  if (xy.length > 1) {
    const area = `0,${H - 4} ` + xy.map((p) => p.join(',')).join(' ') + ` ${W},${H - 4}`;
    svg.append(s('polygon', {class: 'spark-area', points: area}));
    svg.append(s('polyline', {class: 'spark-line', points: xy.map((p) => p.join(',')).join(' ')}));
  }
  if (xy.length) {
    const [x, y] = xy[xy.length - 1];
    svg.append(s('circle', {class: 'spark-dot', cx: x, cy: y, r: 3}));
  }
  return svg;
}
