// Schedules: the owner's recurring jobs with their next fires, and one schedule's fields, the
// job it creates and its events (each fire or skip, with the job it made). Read from the JSON
// API like every other view; a schedule's page is polled so a fire shows up as it happens.

import {call} from './api.js';
import {confirmAction} from './confirm.js';
import {h, json, pollMs, problem, put, say, timeEl} from './dom.js';

function enabled(schedule) {
  return h('span', {class: 'badge ' + (schedule.enabled ? 'state-completed' : 'state-cancelled')},
    schedule.enabled ? 'on' : 'paused');
}

export function showSchedules(view) {
  const results = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('h1', {tabindex: '-1'}, 'Schedules'), results);
  let live = true;
  call('schedules', {query: {limit: '100'}}).then((page) => {
    if (live) put(results, table(page.schedules));
  }, (err) => {
    if (live) put(results, problem(err));
  }).finally(() => results.removeAttribute('aria-busy'));
  return () => {
    live = false;
  };
}

function table(schedules) {
  if (!schedules.length) {
    return h('p', {class: 'empty'}, 'No schedules. Create one with POST /schedules or ',
      h('code', {}, 'python main.py schedule add'), '.');
  }
  return h('table', {class: 'jobs schedules'},
    h('caption', {class: 'sr-only'}, 'Your schedules, newest first'),
    h('thead', {}, h('tr', {}, ['Schedule', 'Cron', 'Time zone', 'Preset', 'State',
      'Next fire', 'Last fire'].map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, schedules.map((sc) => h('tr', {'data-schedule': sc.id},
      h('td', {}, h('a', {href: '#/schedules/' + encodeURIComponent(sc.id), class: 'mono id',
        'aria-label': 'Schedule ' + sc.id}, sc.id)),
      h('td', {}, h('code', {}, sc.cron)),
      h('td', {}, sc.timezone),
      h('td', {}, sc.job.preset),
      h('td', {}, enabled(sc)),
      h('td', {class: 'next'}, sc.enabled ? timeEl(sc.next_fire_at) : '–'),
      h('td', {}, timeEl(sc.last_fire_at))))));
}

export function showSchedule(view, {id}) {
  const title = h('h1', {tabindex: '-1'}, 'Schedule ', h('span', {class: 'mono'}, id));
  const actions = h('div', {class: 'actions', role: 'group', 'aria-label': 'Actions'});
  const notice = h('div');
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('p', {}, h('a', {href: '#/schedules'}, '« All schedules')), title, actions, notice,
    body);
  const path = 'schedules/' + encodeURIComponent(id);
  let live = true;
  let timer = null;
  let shown = null;

  async function toggle(pause) {
    const sure = await confirmAction(pause
      ? {title: 'Pause this schedule?', yes: 'Pause schedule',
        text: 'It creates no jobs until it is resumed; jobs it already made are not touched.'}
      : {title: 'Resume this schedule?', yes: 'Resume schedule',
        text: 'It fires again from its next fire time; the fires it missed while paused ' +
          'are not made up.'});
    if (!sure || !live) return;
    try {
      await call(path, {method: 'PATCH', send: {enabled: !pause}});
      put(notice);
      say(pause ? 'Schedule paused.' : 'Schedule resumed.');
    } catch (err) {
      put(notice, problem(err));
    }
    await refresh();
    (actions.querySelector('button') || title).focus();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [schedule, events] = await Promise.all([call(path), call(path + '/events')]);
      if (!live) return;
      if (schedule.enabled !== shown) {
        shown = schedule.enabled;
        put(actions, schedule.enabled
          ? h('button', {type: 'button', class: 'quiet', onclick: () => toggle(true)},
            'Pause schedule…')
          : h('button', {type: 'button', class: 'primary', onclick: () => toggle(false)},
            'Resume schedule…'));
      }
      draw(body, schedule, events.events);
      body.removeAttribute('aria-busy');
      timer = setTimeout(refresh, pollMs(5000));
    } catch (err) {
      if (live) put(body, problem(err));
    }
  }
  refresh();
  return () => {
    live = false;
    clearTimeout(timer);
  };
}

function row(term, ...value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, ...value));
}

function jobLink(jobId) {
  return jobId ? h('a', {href: '#/jobs/' + encodeURIComponent(jobId), class: 'mono'}, jobId)
    : '–';
}

function draw(body, sc, events) {
  put(body,
    h('section', {'aria-labelledby': 'schedule-h'},
      h('h2', {id: 'schedule-h'}, 'Fields'),
      h('dl', {class: 'fields'},
        row('State', enabled(sc)),
        row('Cron', h('code', {}, sc.cron)),
        row('Time zone', sc.timezone),
        row('Next fire', sc.enabled ? timeEl(sc.next_fire_at) : 'paused'),
        row('Last fire', timeEl(sc.last_fire_at)),
        row('Last job', jobLink(sc.last_job_id)),
        row('Overlap', sc.overlap),
        row('Catch up', sc.catch_up),
        row('Created', timeEl(sc.created_at)),
        row('Updated', timeEl(sc.updated_at)))),
    h('section', {'aria-labelledby': 'template-h'},
      h('h2', {id: 'template-h'}, 'The job it creates'),
      h('dl', {class: 'fields'},
        row('Preset', sc.job.preset),
        row('Max attempts', sc.job.max_attempts === null ? 'the preset\'s' :
          String(sc.job.max_attempts)),
        typeof sc.job.priority === 'number' ? row('Priority', String(sc.job.priority)) : null,
        sc.job.limit_key ? row('Limit key', h('span', {class: 'mono'}, sc.job.limit_key))
          : null),
      h('h3', {}, 'Metadata'),
      json(sc.job.metadata)),
    h('section', {'aria-labelledby': 'events-h'},
      h('h2', {id: 'events-h'}, 'Events'),
      events.length ? h('table', {class: 'jobs events'},
        h('caption', {class: 'sr-only'}, 'Fires and skips, oldest first'),
        h('thead', {}, h('tr', {}, ['Fire time', 'What', 'Job', 'Details']
          .map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, events.map((e) => h('tr', {},
          h('td', {}, timeEl(e.fire_time)),
          h('td', {class: 'kind'}, e.kind),
          h('td', {}, jobLink(e.job_id)),
          h('td', {}, Object.keys(e.details || {}).length
            ? h('code', {}, JSON.stringify(e.details)) : '')))))
        : h('p', {class: 'empty'}, 'No fires yet.')));
}
