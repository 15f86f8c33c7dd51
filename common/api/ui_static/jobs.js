// Jobs: the owner's list, filtered by state and preset, newest first, paged by the API's
// keyset cursor. Filters and cursor live in the URL's fragment (#/jobs?state=…), so Back and
// bookmarks work and nothing of it reaches a server log.

import {call, presetNames} from './api.js';
import {bulkActions} from './bulk.js';
import {STATES, TERMINAL, badge, h, problem, put, timeEl} from './dom.js';

const PAGE = 20;

function listHash(filters, cursor) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries({...filters, cursor})) {
    if (value) q.set(key, value);
  }
  const text = q.toString();
  return '#/jobs' + (text ? '?' + text : '');
}

function select(id, label, options, chosen) {
  return [
    h('label', {for: id}, label),
    h('select', {id, name: id},
      h('option', {value: ''}, 'All'),
      options.map((o) => h('option', {value: o, selected: o === chosen}, o))),
  ];
}

export function showJobs(view, {query}) {
  const filters = {state: query.get('state') || '', preset: query.get('preset') || ''};
  const cursor = query.get('cursor') || '';
  const form = h('form', {class: 'filters', 'aria-label': 'Filter jobs'});
  const results = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  let live = true;
  put(view, h('h1', {tabindex: '-1'}, 'Jobs'), form, bulkActions(filters, load), results);

  presetNames().then((presets) => {
    if (!live) return;
    const known = filters.preset && !presets.includes(filters.preset)
      ? [...presets, filters.preset] : presets;
    put(form,
      h('div', {class: 'field'}, select('state', 'State', STATES, filters.state)),
      h('div', {class: 'field'}, select('preset', 'Preset', known, filters.preset)),
      h('button', {type: 'submit', class: 'primary'}, 'Show'));
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    location.hash = listHash({state: data.get('state'), preset: data.get('preset')}, '');
  });

  function load() {
    results.setAttribute('aria-busy', 'true');
    call('jobs', {query: {...filters, cursor, limit: String(PAGE)}}).then((page) => {
      if (live) put(results, table(page.jobs, cursor), pager(page, filters, cursor));
    }, (err) => {
      if (live) put(results, problem(err));
    }).finally(() => results.removeAttribute('aria-busy'));
  }
  load();
  return () => {
    live = false;
  };
}

function table(jobs, cursor) {
  if (!jobs.length) return h('p', {class: 'empty'}, cursor ? 'No older jobs.' : 'No jobs match.');
  return h('table', {class: 'jobs'},
    h('caption', {class: 'sr-only'}, 'Your jobs, newest first'),
    h('thead', {}, h('tr', {}, ['Job', 'Preset', 'State', 'Attempts', 'Created', 'Due',
      'Finished'].map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, jobs.map((job) => h('tr', {'data-job': job.id},
      // The whole id: time-ordered ids share their first characters for about a minute, so
      // only the whole id (its random tail included) tells jobs apart.
      h('td', {}, h('a', {href: '#/jobs/' + encodeURIComponent(job.id), class: 'mono id',
        'aria-label': 'Job ' + job.id}, job.id)),
      h('td', {}, job.preset),
      h('td', {}, badge(job.state),
        job.cancel_requested && !['CANCELLED', 'COMPLETED', 'FAILED'].includes(job.state)
          ? h('span', {class: 'muted'}, ' cancelling') : null),
      h('td', {}, String(job.attempts)),
      h('td', {}, timeEl(job.created_at)),
      h('td', {class: 'due'}, due(job)),
      h('td', {}, timeEl(job.finished_at))))));
}

/** When a job for later (or a retry's backoff) comes up; `now` once it may run. */
function due(job) {
  if (TERMINAL.has(job.state) || job.state === 'PROCESSING') return '–';
  if (job.not_before && new Date(job.not_before) > new Date()) return timeEl(job.not_before);
  return 'now';
}

function pager(page, filters, cursor) {
  return h('nav', {class: 'pager', 'aria-label': 'Pages'},
    cursor ? h('a', {href: listHash(filters, ''), class: 'button'}, '« Newest') : null,
    page.next_cursor
      ? h('a', {href: listHash(filters, page.next_cursor), class: 'button', rel: 'next'},
        'Older »')
      : null);
}
