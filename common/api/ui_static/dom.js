// Every element is built from text with createElement and textContent: no string is ever parsed
// as markup. Job content, metadata, results and errors are user data; the page's CSP also
// requires Trusted Types, so an innerHTML assignment would throw rather than render.

const SVG = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: h('p', {class: 'x'}, 'text', h('b', {}, 'bold')). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, for the sparkline. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

/** Replace a node's children. */
export function put(parent, ...children) {
  parent.replaceChildren();
  return fill(parent, {}, children);
}

export const STATES = ['WAITING', 'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED'];
export const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

export function badge(state) {
  return h('span', {class: 'badge state-' + String(state).toLowerCase()}, state);
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** Local time, to the second: what an operator compares with their own clock. */
export function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function timeEl(iso) {
  return iso ? h('time', {datetime: iso}, when(iso)) : '–';
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return 'none';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function json(value) {
  return h('pre', {class: 'json'}, JSON.stringify(value, null, 2));
}

/** A message for everyone, screen readers included (the page's polite live region). */
export function say(message) {
  document.getElementById('status').textContent = message;
}

export function problem(err) {
  const p = err.problem || {};
  const text = p.title && p.detail ? `${p.title}: ${p.detail}` : (p.title || err.message);
  return h('p', {class: 'error', role: 'alert'}, text);
}

/** How often views poll, in ms; tests shorten it through sessionStorage. */
export function pollMs(fallback) {
  const chosen = Number(sessionStorage.getItem('jobs.pollMs'));
  return chosen > 0 ? chosen : fallback;
}
