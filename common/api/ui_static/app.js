// The dashboard's entry: sign-in, the hash router, and the page frame. Views live in their own
// modules and return a function that stops their timers when the route changes.

import {call, iap, probeIap, token} from './api.js';
import {h, put, say} from './dom.js';
import {showJob} from './job.js';
import {showJobs} from './jobs.js';
import {showOverview} from './overview.js';
import {showSchedule, showSchedules} from './schedules.js';
import {showWorkflow, showWorkflows} from './workflow.js';

const main = document.getElementById('main');
let stop = () => {};
let firstRender = true;

/** `make dev` prints /ui/#token=…: fragments never reach a server. Keep it, then drop it. */
function takeTokenFromFragment() {
  if (location.hash.startsWith('#token=')) {
    const value = decodeURIComponent(location.hash.slice('#token='.length));
    if (value) token.set(value);
    history.replaceState(null, '', location.pathname + location.search + '#/');
  }
}

function route() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const cut = raw.indexOf('?');
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const query = new URLSearchParams(cut < 0 ? '' : raw.slice(cut + 1));
  const job = /^\/jobs\/([^/?]+)$/.exec(path);
  const schedule = /^\/schedules\/([^/?]+)$/.exec(path);
  const workflow = /^\/workflows\/([^/?]+)$/.exec(path);
  if (path === '/' || path === '') return [showOverview, {}];
  if (path === '/jobs') return [showJobs, {query}];
  if (job) return [showJob, {id: decodeURIComponent(job[1])}];
  if (path === '/schedules') return [showSchedules, {}];
  if (schedule) return [showSchedule, {id: decodeURIComponent(schedule[1])}];
  if (path === '/workflows') return [showWorkflows, {}];
  if (workflow) return [showWorkflow, {id: decodeURIComponent(workflow[1])}];
  return [notFound, {}];
}

function notFound(view) {
  put(view, h('h1', {tabindex: '-1'}, 'Not found'),
    h('p', {}, h('a', {href: '#/'}, 'Back to the overview')));
  return () => {};
}

function signIn(view, reason) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'token-help',
  });
  const errors = h('div');
  const form = h('form', {class: 'card signin', onsubmit: async (event) => {
    event.preventDefault();
    token.set(input.value);
    try {
      await call('stats', {signOut: false});
      history.replaceState(null, '', location.pathname + location.search + '#/');
      render();
      say('Signed in.');
    } catch (err) {
      token.clear();
      put(errors, h('p', {class: 'error', role: 'alert'},
        err.status === 401 ? 'That token was refused: ' + err.message : err.message));
      input.focus();
    }
  }},
  h('label', {for: 'token'}, 'API token'),
  input,
  h('p', {id: 'token-help', class: 'help'},
    'A bearer token for the jobs API. It stays in this browser tab (sessionStorage) and is ' +
    'sent only in the Authorization header of the dashboard\'s API calls. ' +
    'In make dev, the link it prints signs you in.'),
  h('button', {type: 'submit', class: 'primary'}, 'Sign in'),
  errors);
  put(view, h('h1', {tabindex: '-1'}, 'Sign in'),
    reason ? h('p', {class: 'error', role: 'alert'}, reason) : null, form);
  input.focus();
  return () => {};
}

// Why the last token was refused: kept while signed out, so a render that races the refusal
// (the fragment's hashchange, another request's 401) still says it.
let refusal;

function render(reason) {
  stop();
  const signedIn = Boolean(token.get()) || iap.get();
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  if (!signedIn) {
    stop = signIn(main, reason ?? refusal);
    return;
  }
  refusal = undefined;
  const [view, args] = route();
  for (const link of document.querySelectorAll('#nav a')) {
    const href = link.getAttribute('href');
    const here = href === '#' + (location.hash.slice(1).split('?')[0] || '/') ||
      (href !== '#/' && location.hash.startsWith(href + '/'));
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  stop = view(main, args);
  if (!firstRender) main.querySelector('h1')?.focus();
  firstRender = false;
}

takeTokenFromFragment();
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
document.getElementById('signout').addEventListener('click', () => {
  refusal = undefined;
  token.clear();
  iap.clear();
  render();
  say('Signed out.');
});
window.addEventListener('jobs:signed-out', (event) => {
  refusal = 'Your token was refused (' + event.detail + '). Sign in again.';
  render(refusal);
});
window.addEventListener('hashchange', () => {
  say('');  // a message belongs to the view it was said on
  takeTokenFromFragment();
  render();
});
// Signed in by IAP? Then no token is asked for; else the sign-in form as before.
if (token.get()) render();
else probeIap().then(() => render());
