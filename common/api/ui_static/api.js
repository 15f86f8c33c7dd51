// The dashboard's only way to the data: the JSON API, with the caller's own bearer token, so
// every answer is scoped to that owner exactly as for any other client. The token lives in
// sessionStorage (gone when the tab closes) and is only ever sent in the Authorization header.

const KEY = 'jobs.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value.trim()),
  clear: () => sessionStorage.removeItem(KEY),
};

// Behind Identity-Aware Proxy the person is already signed in: IAP's session cookie goes with
// each same-origin call and IAP adds its signed header, which the API verifies. No token then.
const IAP_KEY = 'jobs.iap';
export const iap = {
  get: () => sessionStorage.getItem(IAP_KEY) === '1',
  set: () => sessionStorage.setItem(IAP_KEY, '1'),
  clear: () => sessionStorage.removeItem(IAP_KEY),
};

/** Whether the API already knows who this is without a token (IAP): asked only when the
 * public OpenAPI document says submit is behind IAP (a refused probe would log an error). */
export async function probeIap() {
  try {
    // With IAP's cookie: behind IAP, a request without it never reaches the API.
    const same = {credentials: 'same-origin', cache: 'no-store', referrerPolicy: 'no-referrer'};
    const described = await fetch(apiUrl('openapi.json'), same);
    const doc = described.ok ? await described.json() : {};
    if (!doc.components?.securitySchemes?.iap) return false;
    const res = await fetch(apiUrl('stats'), {
      headers: {Accept: 'application/json'}, credentials: 'same-origin', cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
    if (res.ok) iap.set();
    return res.ok;
  } catch {
    return false;
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The API's root: one level above this page (/ui/), wherever the service is mounted. */
export function apiUrl(path, query) {
  const url = new URL('../' + path, document.baseURI);
  for (const [key, value] of Object.entries(query || {})) {
    if (value) url.searchParams.set(key, value);
  }
  return url;
}

/** Call the API (`send`: a JSON body); resolves with the JSON answer, rejects with an ApiError.
 * A 401 signs out. */
export async function call(path, {method = 'GET', query, send, auth = true, signOut = true} = {}) {
  const headers = {Accept: 'application/json'};
  const viaIap = auth && !token.get() && iap.get();
  if (auth && !viaIap) headers.Authorization = 'Bearer ' + (token.get() || '');
  if (send !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(apiUrl(path, query), {
      method, headers, credentials: viaIap ? 'same-origin' : 'omit', cache: 'no-store',
      referrerPolicy: 'no-referrer', body: send === undefined ? undefined : JSON.stringify(send),
    });
  } catch {
    throw new ApiError(0, {title: 'The API cannot be reached'});
  }
  const type = res.headers.get('Content-Type') || '';
  const body = type.includes('json') ? await res.json() : {};
  if (!res.ok) {
    const err = new ApiError(res.status, body);
    if (res.status === 401 && auth && signOut) {
      token.clear();
      iap.clear();
      window.dispatchEvent(new CustomEvent('jobs:signed-out', {detail: err.message}));
    }
    throw err;
  }
  return body;
}

let presets = null;

/** This instance's presets, from its public OpenAPI document (one variant per preset). */
export async function presetNames() {
  if (presets === null) {
    try {
      const doc = await call('openapi.json', {auth: false});
      const schemas = doc.components.schemas;
      presets = schemas.NewJob.oneOf
        .map((v) => schemas[v.$ref.split('/').pop()].properties.preset.const)
        .filter((name) => typeof name === 'string')
        .sort();
    } catch {
      presets = [];
    }
  }
  return presets;
}
