// Overview: the owner's queue from /stats, polled; the throughput samples stay in this tab.
// The page is built once and then only its numbers change, so focus and screen-reader
// position survive each poll.

import {call} from './api.js';
import {STATES, age, badge, h, pollMs, problem, put} from './dom.js';
import {addSample, loadSamples, sparkline} from './sparkline.js';

export function showOverview(view) {
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('h1', {tabindex: '-1'}, 'Overview'), body);
  const samples = loadSamples();
  let parts = null;
  let timer = null;
  let live = true;

  async function refresh() {
    try {
      const stats = await call('stats');
      if (!live) return;
      addSample(samples, Date.now(), stats.throughput_per_min);
      if (parts === null) parts = build(body);
      update(parts, stats, samples);
    } catch (err) {
      if (live) {
        parts = null;
        put(body, problem(err));
      }
    }
    if (live) timer = setTimeout(refresh, pollMs(5000));
  }
  refresh();
  return () => {
    live = false;
    clearTimeout(timer);
  };
}

function build(body) {
  const counts = {};
  const fact = (id, term) => {
    const dd = h('dd', {id});
    return [h('div', {}, h('dt', {}, term), dd), dd];
  };
  const [oldestRow, oldest] = fact('oldest', 'Oldest due job waiting');
  const [dueRow, due] = fact('due', 'Due (waiting for a worker)');
  const [parkedRow, parked] = fact('parked', 'Parked (waiting for a free slot)');
  const [finishedRow, finished] = fact('finished', 'Finished in the last 5 minutes');
  const [rateRow, rate] = fact('throughput', 'Throughput (5-minute average)');
  const total = h('p', {class: 'muted'});
  const chart = h('div', {class: 'chart'});
  const caption = h('figcaption', {class: 'muted'});
  put(body,
    h('section', {'aria-labelledby': 'depth-h'},
      h('h2', {id: 'depth-h'}, 'Jobs by state'),
      h('ul', {class: 'depth'}, STATES.map((st) => {
        counts[st] = h('span', {class: 'count', 'data-state': st});
        return h('li', {}, h('a', {href: '#/jobs?state=' + st, class: 'tile'},
          badge(st), counts[st], h('span', {class: 'sr-only'}, ' jobs: show them')));
      })),
      total),
    h('section', {'aria-labelledby': 'flow-h'},
      h('h2', {id: 'flow-h'}, 'Flow'),
      h('dl', {class: 'facts'}, oldestRow, dueRow, parkedRow, finishedRow, rateRow),
      h('figure', {class: 'card'}, chart, caption)));
  body.removeAttribute('aria-busy');
  return {counts, oldest, due, parked, finished, rate, total, chart, caption};
}

function update(parts, stats, samples) {
  let all = 0;
  for (const st of STATES) {
    const n = stats.depth[st] || 0;
    all += n;
    parts.counts[st].textContent = String(n);
  }
  parts.total.textContent = `${all} jobs in all.`;
  parts.oldest.textContent = age(stats.oldest_pending_age_s);
  parts.due.textContent = String(stats.pending_due ?? 0);
  parts.parked.textContent = String(stats.pending_parked ?? 0);
  parts.finished.textContent = String(stats.finished_last_5_min);
  parts.rate.textContent = `${stats.throughput_per_min.toFixed(1)} jobs/min`;
  parts.chart.replaceChildren(sparkline(samples));
  const every = pollMs(5000);
  parts.caption.textContent = 'Throughput in jobs per minute, sampled every ' +
    (every < 1000 ? `${every} ms` : `${Math.round(every / 1000)} s`) + ' while this tab is open.';
}
