// Workflows: the caller's list, and one workflow drawn as its graph (an SVG laid out by depth:
// each step in the column after its deepest parent, an arrow from each parent), with each
// step's state, the progress (steps done / steps) and a table of the steps for screen readers
// and copying. Every name and message is user data: set as text, never parsed as markup.

import {call} from './api.js';
import {confirmAction} from './confirm.js';
import {badge, h, pollMs, problem, put, s, say, timeEl} from './dom.js';

const W = 168;
const H = 44;
const GAP_X = 56;
const GAP_Y = 18;

export function showWorkflows(view) {
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('h1', {tabindex: '-1'}, 'Workflows'), body);
  let live = true;
  call('workflows', {query: {limit: '100'}}).then((page) => {
    if (!live) return;
    body.removeAttribute('aria-busy');
    if (!page.workflows.length) {
      put(body, h('p', {class: 'muted'}, 'No workflows yet (POST /workflows creates one).'));
      return;
    }
    put(body, h('table', {class: 'jobs'},
      h('thead', {}, h('tr', {}, ['Workflow', 'Name', 'State', 'Progress', 'Created']
        .map((c) => h('th', {scope: 'col'}, c)))),
      h('tbody', {}, page.workflows.map((w) => h('tr', {},
        h('td', {}, h('a', {href: '#/workflows/' + encodeURIComponent(w.id), class: 'mono'},
          w.id)),
        h('td', {}, w.name || '–'), h('td', {}, badge(w.state)),
        h('td', {}, `${w.steps_done} / ${w.steps_total}`), h('td', {}, timeEl(w.created_at)))))));
  }).catch((err) => live && put(body, problem(err)));
  return () => {
    live = false;
  };
}

export function showWorkflow(view, {id}) {
  const title = h('h1', {tabindex: '-1'}, 'Workflow ', h('span', {class: 'mono'}, id));
  const actions = h('div', {class: 'actions', role: 'group', 'aria-label': 'Actions'});
  const notice = h('div');
  const body = h('div', {'aria-busy': 'true'}, h('p', {}, 'Loading…'));
  put(view, h('p', {}, h('a', {href: '#/workflows'}, '« All workflows')), title, actions, notice,
    body);
  let live = true;
  let timer = null;
  const path = 'workflows/' + encodeURIComponent(id);

  async function refresh() {
    clearTimeout(timer);
    try {
      const wf = await call(path);
      if (!live) return;
      draw(body, wf);
      drawActions(wf);
      body.removeAttribute('aria-busy');
      if (wf.state === 'RUNNING') timer = setTimeout(refresh, pollMs(2000));
    } catch (err) {
      if (live) put(body, problem(err));
    }
  }

  function drawActions(wf) {
    const failed = wf.steps.some((st) => st.state === 'FAILED');
    put(actions,
      wf.state === 'RUNNING' ? h('button', {type: 'button', class: 'danger',
        onclick: () => act('cancel')}, 'Cancel workflow…') : null,
      failed ? h('button', {type: 'button', class: 'primary', onclick: () => act('retry')},
        'Retry failed steps…') : null);
  }

  async function act(kind) {
    const cancel = kind === 'cancel';
    const sure = await confirmAction(cancel
      ? {title: 'Cancel this workflow?', yes: 'Cancel workflow', danger: true,
        text: 'Waiting and pending steps end at once; running ones stop at their next check.'}
      : {title: 'Retry the failed steps?', yes: 'Retry',
        text: 'Each FAILED step runs again with a fresh budget of attempts, and the steps it ' +
          'had cancelled wait for it again.'});
    if (!sure || !live) return;
    try {
      await call(`${path}:${kind}`, {method: 'POST'});
      put(notice);
      say(cancel ? 'Workflow cancelled.' : 'Retry accepted: the failed steps run again.');
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

/** Each step's column: one after its deepest parent (a spawned child after its spawner). */
function depths(steps) {
  const byName = new Map(steps.map((st) => [st.name, st]));
  const depth = new Map();
  const of = (name, seen) => {
    if (depth.has(name)) return depth.get(name);
    const st = byName.get(name);
    const up = [...st.after, ...(st.spawned_by ? [st.spawned_by] : [])]
      .filter((p) => byName.has(p) && !seen.has(p));
    const d = up.length ? 1 + Math.max(...up.map((p) => of(p, new Set([...seen, name])))) : 0;
    depth.set(name, d);
    return d;
  };
  for (const st of steps) of(st.name, new Set());
  return depth;
}

function graph(steps) {
  const depth = depths(steps);
  const columns = [];
  const at = new Map();
  for (const st of steps) {
    const d = depth.get(st.name);
    columns[d] = columns[d] || [];
    at.set(st.name, {x: d * (W + GAP_X), y: columns[d].length * (H + GAP_Y)});
    columns[d].push(st);
  }
  const width = Math.max(1, columns.length) * (W + GAP_X) - GAP_X + 2;
  const height = Math.max(...columns.map((c) => (c || []).length), 1) * (H + GAP_Y) - GAP_Y + 2;
  const edges = [];
  for (const st of steps) {
    const to = at.get(st.name);
    for (const parent of [...st.after, ...(st.spawned_by ? [st.spawned_by] : [])]) {
      const from = at.get(parent);
      if (!from) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 4;
      const y2 = to.y + H / 2;
      const mid = (x1 + x2) / 2;
      edges.push(s('path', {class: 'edge' + (st.spawned_by === parent ? ' spawned' : ''),
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)'}));
    }
  }
  const nodes = steps.map((st) => {
    const {x, y} = at.get(st.name);
    const label = st.name.length > 22 ? st.name.slice(0, 21) + '…' : st.name;
    return s('a', {href: '#/jobs/' + encodeURIComponent(st.job_id),
      class: 'node state-' + String(st.state).toLowerCase(), 'data-step': st.name},
    s('title', {}, `${st.name}: ${st.state}` + (st.error_message ? ` (${st.error_message})` : '')),
    s('rect', {x: x + 1, y: y + 1, width: W, height: H, rx: 6}),
    s('text', {x: x + 10, y: y + 18, class: 'name'}, label),
    s('text', {x: x + 10, y: y + 35, class: 'state'}, st.state));
  });
  return s('svg', {class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'group', 'aria-label': 'The workflow\'s steps as a graph; the table below lists them'},
  s('defs', {}, s('marker', {id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4,
    markerWidth: 8, markerHeight: 8, orient: 'auto'}, s('path', {d: 'M0,0 L8,4 L0,8 z'}))),
  edges, nodes);
}

function draw(body, wf) {
  const pct = wf.steps_total ? Math.round((100 * wf.steps_done) / wf.steps_total) : 0;
  put(body,
    h('dl', {class: 'fields'},
      h('div', {}, h('dt', {}, 'Name'), h('dd', {}, wf.name || '–')),
      h('div', {}, h('dt', {}, 'State'), h('dd', {}, badge(wf.state))),
      h('div', {}, h('dt', {}, 'Progress'), h('dd', {},
        h('progress', {max: 100, value: pct, 'aria-label': 'Steps done'}, `${pct}%`),
        h('span', {class: 'progress-text'}, ` ${wf.steps_done} / ${wf.steps_total} steps`))),
      wf.broken_step ? h('div', {}, h('dt', {}, 'Broken by'),
        h('dd', {class: 'mono'}, wf.broken_step)) : null,
      h('div', {}, h('dt', {}, 'Created'), h('dd', {}, timeEl(wf.created_at))),
      h('div', {}, h('dt', {}, 'Finished'), h('dd', {}, timeEl(wf.finished_at)))),
    h('section', {'aria-labelledby': 'graph-h'},
      h('h2', {id: 'graph-h'}, 'Graph'),
      h('div', {class: 'graph-box'}, graph(wf.steps))),
    h('section', {'aria-labelledby': 'steps-h'},
      h('h2', {id: 'steps-h'}, 'Steps'),
      h('table', {class: 'jobs steps'},
        h('thead', {}, h('tr', {}, ['Step', 'State', 'After', 'Attempts', 'Error']
          .map((c) => h('th', {scope: 'col'}, c)))),
        h('tbody', {}, wf.steps.map((st) => h('tr', {'data-step': st.name},
          h('td', {}, h('a', {href: '#/jobs/' + encodeURIComponent(st.job_id)}, st.name)),
          h('td', {}, badge(st.state)),
          h('td', {}, st.after.join(', ') || '–',
            st.on_upstream_failure === 'run' ? h('span', {class: 'muted'}, ' (runs anyway)') : null),
          h('td', {}, String(st.attempts)),
          h('td', {}, st.error_type ? `${st.error_type}: ${st.error_message || ''}` : '')))))));
}
