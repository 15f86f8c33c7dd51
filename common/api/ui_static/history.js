// The owner's history from the server (GET /stats/history): how many jobs ended in each minute
// of the last hour, or each quarter hour of the last day, by end state, drawn as stacked bars.
// Built with DOM calls (no markup strings, no inline styles: the colours are app.css classes),
// so a reload or a second tab shows the same past.

import {h, s, when} from './dom.js';

const W = 480;
const H = 72;
export const ENDS = ['COMPLETED', 'FAILED', 'CANCELLED'];

/** Totals per end state over the window, and the busiest bucket. */
export function summarise(history) {
  const totals = Object.fromEntries(ENDS.map((st) => [st, 0]));
  let busiest = 0;
  for (const bucket of history.buckets) {
    let n = 0;
    for (const st of ENDS) {
      const c = Number(bucket.counts[st] || 0);
      totals[st] += c;
      n += c;
    }
    busiest = Math.max(busiest, n);
  }
  return {totals, busiest};
}

function unit(history) {
  if (history.bucket_s === 60) return 'minute';
  if (history.bucket_s === 900) return 'quarter hour';
  return `${Math.round(history.bucket_s / 60)}-minute bucket`;
}

/** The chart's words: what a screen reader hears, and the caption everyone reads. */
export function describe(history) {
  const {totals, busiest} = summarise(history);
  const parts = ENDS.map((st) => `${totals[st]} ${st.toLowerCase()}`).join(', ');
  return `Jobs ended in the last ${history.window}: ${parts}; ` +
    `at most ${busiest} in one ${unit(history)}`;
}

export function chart(history) {
  const label = describe(history);
  const {busiest} = summarise(history);
  const top = Math.max(1, busiest);
  const n = Math.max(1, history.buckets.length);
  const step = W / n;
  const svg = s('svg', {
    class: 'history', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'none', 'data-window': history.window,
  }, s('title', {}, label),
  s('line', {class: 'history-base', x1: 0, y1: H - 1, x2: W, y2: H - 1}));
  history.buckets.forEach((bucket, i) => {
    let y = H - 1;
    for (const st of ENDS) {
      const c = Number(bucket.counts[st] || 0);
      if (!c) continue;
      const tall = (c / top) * (H - 6);
      y -= tall;
      svg.append(s('rect', {
        class: 'bar bar-' + st.toLowerCase(), x: (i * step + step * 0.1).toFixed(1),
        y: y.toFixed(1), width: (step * 0.8).toFixed(1), height: tall.toFixed(1),
      }, s('title', {}, `${when(bucket.at)}: ${c} ${st.toLowerCase()}`)));
    }
  });
  return svg;
}

export function legend() {
  return h('ul', {class: 'legend'}, ENDS.map((st) => h('li', {},
    h('span', {class: 'swatch bar-' + st.toLowerCase(), 'aria-hidden': 'true'}),
    st.toLowerCase())));
}

export function caption(history) {
  const first = history.buckets[0];
  return `${describe(history)}. One bar per ${unit(history)}` +
    (first ? `, from ${when(first.at)}` : '') + ' (from the server\'s records).';
}
