// Overview: the owner's queue from /stats and its history from /stats/history (the server's
// records, so a reload shows the same past), polled. The page is built once and then only its
// numbers change, so focus and screen-reader position survive each poll.

import {call} from './api.js';
import {STATES, age, badge, h, pollMs, problem, put} from './dom.js';
import {caption, chart, legend} from './history.js';

export function showOverview(view) {
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('h1', {tabindex: '-1'}, 'Overview'), body);
  let parts = null;
  let timer = null;
  let live = true;
  let day = null;
  let dayAt = 0;

  async function refresh() {
    try {
      // The day's buckets are a quarter hour wide: asking for them once a minute is enough,
      // and it is the costlier count for a busy owner (bench/history_query.py).
      const dayDue = day === null || Date.now() - dayAt >= Math.min(60000, pollMs(5000) * 12);
      const [stats, hour, freshDay] = await Promise.all([
        call('stats'), call('stats/history', {query: {window: 'hour'}}),
        dayDue ? call('stats/history', {query: {window: 'day'}}) : day]);
      if (!live) return;
      if (dayDue) [day, dayAt] = [freshDay, Date.now()];
      if (parts === null) parts = build(body);
      update(parts, stats, {hour, day});
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
  const figure = (id) => {
    const box = h('div', {class: 'chart', id});
    const text = h('figcaption', {class: 'muted'});
    return [h('figure', {class: 'card'}, box, text), box, text];
  };
  const [hourFigure, hourChart, hourCaption] = figure('history-hour');
  const [dayFigure, dayChart, dayCaption] = figure('history-day');
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
      h('dl', {class: 'facts'}, oldestRow, dueRow, parkedRow, finishedRow, rateRow)),
    h('section', {'aria-labelledby': 'history-h'},
      h('h2', {id: 'history-h'}, 'Jobs ended'),
      legend(),
      h('h3', {}, 'Last hour, per minute'), hourFigure,
      h('h3', {}, 'Last day, per quarter hour'), dayFigure));
  body.removeAttribute('aria-busy');
  return {counts, oldest, due, parked, finished, rate, total, hourChart, hourCaption, dayChart,
    dayCaption};
}

function update(parts, stats, history) {
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
  parts.hourChart.replaceChildren(chart(history.hour));
  parts.hourCaption.textContent = caption(history.hour);
  parts.dayChart.replaceChildren(chart(history.day));
  parts.dayCaption.textContent = caption(history.day);
}
