// One job: its fields, progress (when the API reports it), result or error, the event
// timeline, and the cancel and retry actions, each confirmed first. Polled until terminal.

import {call} from './api.js';
import {confirmAction} from './confirm.js';
import {TERMINAL, badge, h, json, pollMs, problem, put, say, timeEl} from './dom.js';

export function showJob(view, {id}) {
  const title = h('h1', {tabindex: '-1'}, 'Job ', h('span', {class: 'mono'}, id));
  const actions = h('div', {class: 'actions', role: 'group', 'aria-label': 'Actions'});
  const notice = h('div');
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('p', {}, h('a', {href: '#/jobs'}, '« All jobs')), title, actions, notice, body);
  let live = true;
  let timer = null;
  let shownState = null;

  async function refresh() {
    clearTimeout(timer);
    try {
      const path = 'jobs/' + encodeURIComponent(id);
      const [job, events] = await Promise.all([call(path), call(path + '/events')]);
      if (!live) return;
      if (job.state + job.cancel_requested !== shownState) {
        if (shownState !== null && !shownState.startsWith(job.state)) {
          say(`The job is now ${job.state}.`);
        }
        shownState = job.state + job.cancel_requested;
        drawActions(actions, job, act);
      }
      drawJob(body, job, events.events);
      body.removeAttribute('aria-busy');
      // The two reads run side by side: the events may predate the job's last move, so keep
      // polling until the timeline has caught up with a finished job too.
      const last = events.events[events.events.length - 1];
      const behind = !last || last.to_state !== job.state;
      if (live && (!TERMINAL.has(job.state) || behind)) timer = setTimeout(refresh, pollMs(2000));
    } catch (err) {
      if (live) put(body, problem(err));
    }
  }

  async function act(kind) {
    const cancel = kind === 'cancel';
    const sure = await confirmAction(cancel
      ? {title: 'Cancel this job?', yes: 'Cancel job', danger: true,
        text: 'A pending job ends at once; a running one stops at its next check.'}
      : {title: 'Retry this job?', yes: 'Retry job',
        text: 'The job goes back to PENDING with a fresh budget of attempts.'});
    if (!sure || !live) return;
    try {
      const job = await call(`jobs/${encodeURIComponent(id)}/${kind}`, {method: 'POST'});
      const text = cancel
        ? (job.state === 'CANCELLED' ? 'Job cancelled.' : 'Cancel requested; the job stops soon.')
        : 'Retry accepted: the job is PENDING again.';
      put(notice);
      say(text);
    } catch (err) {
      put(notice, problem(err));
    }
    await refresh();
    (actions.querySelector('button') || title).focus();
  }

  refresh();
  return () => {
    live = false;
    clearTimeout(timer);
  };
}

function drawActions(actions, job, act) {
  const canCancel = ['WAITING', 'PENDING', 'PROCESSING'].includes(job.state) &&
    !job.cancel_requested;
  put(actions,
    canCancel ? h('button', {type: 'button', class: 'danger', onclick: () => act('cancel')},
      'Cancel job…') : null,
    job.state === 'FAILED' ? h('button', {type: 'button', class: 'primary',
      onclick: () => act('retry')}, 'Retry job…') : null);
}

function row(term, ...value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, ...value));
}

/** `progress` comes from a newer API: a fraction, or {fraction, note}; shown only if present. */
function progress(value) {
  if (value === undefined || value === null) return null;
  const fraction = typeof value === 'number' ? value : Number(value.fraction);
  const note = typeof value === 'object' && value.note ? String(value.note) : '';
  if (!Number.isFinite(fraction)) return null;
  const pct = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
  return row('Progress',
    h('progress', {max: 100, value: pct, 'aria-label': 'Progress'}, `${pct}%`),
    ` ${pct}%`, note ? h('span', {class: 'muted'}, ' ' + note) : null);
}

function drawJob(body, job, events) {
  const r = job.result;
  put(body,
    h('section', {'aria-labelledby': 'fields-h'},
      h('h2', {id: 'fields-h'}, 'Fields'),
      h('dl', {class: 'fields'},
        row('State', badge(job.state),
          job.cancel_requested && !TERMINAL.has(job.state) ? ' (cancel requested)' : null),
        progress(job.progress),
        job.workflow_id ? row('Workflow', h('a', {href: '#/workflows/' +
          encodeURIComponent(job.workflow_id)}, 'step ', h('span', {class: 'mono'}, job.step || '?'),
          ' of workflow ', h('span', {class: 'mono'}, job.workflow_id))) : null,
        row('Preset', job.preset),
        row('Attempts', job.attempt_limit && job.attempt_limit !== job.max_attempts
          ? `${job.attempts} of ${job.attempt_limit} (retried)` : String(job.attempts)),
        row('Max attempts per run', String(job.max_attempts)),
        execution(job),
        row('Created', timeEl(job.created_at)),
        row('Started', timeEl(job.started_at)),
        job.not_before ? row(job.attempts ? 'Next try' : 'Due', timeEl(job.not_before)) : null,
        typeof job.priority === 'number' ? row('Priority', String(job.priority)) : null,
        job.limit_key ? row('Limit key', h('span', {class: 'mono'}, job.limit_key)) : null,
        waiting(job),
        row('Finished', timeEl(job.finished_at)),
        row('Updated', timeEl(job.updated_at)),
        job.trace_id ? row('Trace', h('span', {class: 'mono'}, job.trace_id)) : null),
      h('h3', {}, 'Metadata'),
      json(job.metadata)),
    callback(job),
    h('section', {'aria-labelledby': 'result-h'},
      h('h2', {id: 'result-h'}, r && r.status === 'failed' ? 'Error' : 'Result'),
      !r ? h('p', {class: 'muted'}, TERMINAL.has(job.state) ? 'No result.' : 'No result yet.')
        : r.status === 'failed'
          ? h('div', {class: 'failure'}, h('p', {}, h('strong', {}, r.error_type || 'Error')),
            h('pre', {class: 'json'}, r.error_message || ''))
          : [json(r.output), r.duration_ms != null
            ? h('p', {class: 'muted'}, `Took ${r.duration_ms} ms.`) : null]),
    h('section', {'aria-labelledby': 'timeline-h'},
      h('h2', {id: 'timeline-h'}, 'Timeline'),
      h('ol', {class: 'timeline'}, events.map((e) => h('li', {},
        timeEl(e.at), ' ',
        e.from_state ? [badge(e.from_state), ' → '] : null, badge(e.to_state), ' ',
        h('span', {class: 'reason'}, e.reason),
        h('span', {class: 'muted'}, ` attempt ${e.attempt}`),
        details(e.details))))));
}

const CONSOLE = 'https://console.cloud.google.com/';

/** A long job's execution (`execution`: name, attempt, logs_url, console_url): its name, and
 * links to its logs and to its page in the Google Cloud console, each in a new tab. Only a
 * console URL becomes a link: anything else the API might carry is left out. */
function execution(job) {
  const x = job.execution;
  if (!x || typeof x !== 'object' || !x.name) return null;
  const link = (url, text) => (typeof url === 'string' && url.startsWith(CONSOLE)
    ? [' · ', h('a', {href: url, target: '_blank', rel: 'noopener noreferrer'}, text)] : null);
  return row('Execution', h('span', {class: 'mono'}, String(x.name)),
    Number.isInteger(x.attempt) ? ` (attempt ${x.attempt})` : null,
    link(x.logs_url, 'Logs'), link(x.console_url, 'Cloud Run'));
}

const WAITS = {
  'running:owner': 'your limit on running jobs is full',
  'running:preset': 'its preset\'s limit on running jobs is full',
  'running:key': 'its key\'s limit on running jobs is full',
  'rate:preset': 'its preset\'s rate has no start slot near',
  'rate:key': 'its key\'s rate has no start slot near',
  'rate-reserved': 'a start slot is booked',
};

/** Why a PENDING job waits on a flow limit (`waiting`: reason, limit, until), as text. */
function waiting(job) {
  const w = job.waiting;
  if (!w || typeof w !== 'object' || job.state !== 'PENDING') return null;
  const reason = String(w.reason);
  const until = w.until
    ? [reason === 'rate-reserved' ? '; starts ' : '; next slot ', timeEl(w.until)]
    : (reason.startsWith('running:') ? '; starts when a job under it ends' : null);
  return row('Waiting', h('span', {class: 'mono'}, reason), ` (${w.limit}): `,
    WAITS[reason] || 'on a limit', until);
}

/** The callback URL and the webhook's delivery state (`webhook`: its state, what it waits
 * for, its attempts and last answer), and any other field about webhooks a newer API adds,
 * each shown as text; empty values are left out. */
function callback(job) {
  const found = Object.entries(job).filter(([key, value]) =>
    key.includes('webhook') && value !== null && value !== undefined);
  if (!job.callback_url && !found.length) return null;
  return h('section', {'aria-labelledby': 'callback-h'},
    h('h2', {id: 'callback-h'}, 'Callback'),
    h('dl', {class: 'fields callback'},
      row('Callback URL', job.callback_url
        ? h('span', {class: 'mono url'}, job.callback_url) : 'none'),
      found.map(([key, value]) => webhookRows(key, value))));
}

/** The webhook object as rows of its own (one field a row, times as times), so that each gets
 * a whole grid cell; anything else about webhooks as one row. */
function webhookRows(key, value) {
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return row(label(key), webhookValue(value));
  }
  return Object.entries(value).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) =>
    row(label(`${key} ${k}`), k.endsWith('_at') && typeof v === 'string' ? timeEl(v)
      : (typeof v === 'string' ? v : JSON.stringify(v))));
}

function label(key) {
  const text = key.replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function webhookValue(value) {
  if (Array.isArray(value)) {
    if (!value.length) return 'none';
    return h('ol', {class: 'deliveries'}, value.map((item) => h('li', {},
      item && typeof item === 'object' ? details(item) : String(item))));
  }
  if (value && typeof value === 'object') {
    return details(Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null)));
  }
  return String(value);
}

/** An event's details on one line: `key value · key value`, values as text. */
function details(found) {
  const entries = Object.entries(found || {});
  if (!entries.length) return null;
  return h('dl', {class: 'details'}, entries.map(([key, value]) => h('div', {},
    h('dt', {}, key),
    h('dd', {}, typeof value === 'string' ? value : JSON.stringify(value)))));
}
