// Bulk actions on the jobs list: cancel or retry every job of yours that the list's filters
// match. The API first counts them (dry_run), the confirmation names that count, and the
// confirmed call is bounded by the count's `as_of` (created_before), so a job submitted while
// you read the dialog is not part of it. A server that runs out of time answers complete:
// false; the call is repeated until it is complete, and the counts are added up.

import {call} from './api.js';
import {confirmAction} from './confirm.js';
import {h, problem, put, say} from './dom.js';

const CANCELLABLE = ['', 'WAITING', 'PENDING', 'PROCESSING'];
const RETRYABLE = ['', 'FAILED'];

function plural(n) {
  return n === 1 ? '1 job' : `${n} jobs`;
}

function described(filters) {
  const parts = [];
  if (filters.state) parts.push(`state ${filters.state}`);
  if (filters.preset) parts.push(`preset ${filters.preset}`);
  return parts.length ? parts.join(', ') : 'no filter: every job of yours';
}

const WORDING = {
  cancel: (n, filters) => ({
    title: `Cancel ${plural(n)}?`, yes: `Cancel ${plural(n)}`, no: 'Keep them', danger: true,
    text: `${plural(n)} match (${described(filters)}). Pending ones end at once; running ones ` +
      'stop at their next check.',
  }),
  retry: (n, filters) => ({
    title: `Retry ${plural(n)}?`, yes: `Retry ${plural(n)}`, no: 'Not now',
    text: `${plural(n)} match (${described(filters)}). Each goes back to PENDING with a fresh ` +
      'budget of attempts.',
  }),
};

function outcome(action, done) {
  return action === 'cancel'
    ? `Cancelled ${plural(done.cancelled)}; asked ${plural(done.cancel_requested)} running to ` +
      'stop.'
    : `Retried ${plural(done.retried)}.`;
}

/** The bar of bulk buttons for the list's applied filters, and where their outcome shows;
 * `onDone` reloads the list. */
export function bulkActions(filters, onDone) {
  const notice = h('div', {class: 'bulk-notice'});
  const filter = {};
  if (filters.state) filter.state = filters.state;
  if (filters.preset) filter.preset = filters.preset;

  async function run(action, button) {
    put(notice);
    try {
      const scope = Object.keys(filter).length ? filter : {all: true};
      const counted = await call(`jobs:bulk-${action}`,
        {method: 'POST', send: {...scope, dry_run: true}});
      if (counted.matched === 0) {
        const text = `No job matches: nothing to ${action}.`;
        put(notice, h('p', {}, text));
        say(text);
        return;
      }
      if (!await confirmAction(WORDING[action](counted.matched, filters))) return;
      const body = {...filter, created_before: counted.as_of};
      const total = {cancelled: 0, cancel_requested: 0, retried: 0};
      for (;;) {
        const done = await call(`jobs:bulk-${action}`, {method: 'POST', send: body});
        for (const key of Object.keys(total)) total[key] += done[key];
        if (done.complete) break;
      }
      const text = outcome(action, total);
      put(notice, h('p', {class: 'done'}, text));
      say(text);
      onDone();
    } catch (err) {
      put(notice, problem(err));
    } finally {
      button.focus();
    }
  }

  const buttons = [];
  if (CANCELLABLE.includes(filters.state)) {
    const b = h('button', {type: 'button', class: 'danger'}, 'Cancel matching…');
    b.addEventListener('click', () => run('cancel', b));
    buttons.push(b);
  }
  if (RETRYABLE.includes(filters.state)) {
    const b = h('button', {type: 'button', class: 'quiet'}, 'Retry matching…');
    b.addEventListener('click', () => run('retry', b));
    buttons.push(b);
  }
  const bar = buttons.length
    ? h('div', {class: 'bulk', role: 'group', 'aria-label': 'Act on every job these filters ' +
      'match'}, buttons)
    : null;
  return [bar, notice];
}
