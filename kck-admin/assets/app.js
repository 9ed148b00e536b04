// The kck admin page: a small single-page client of the JSON API next to it
// (`api/...`, relative to the page). No framework, no build step, no CDN:
// this file is compiled into kck-admin and served as is.
//
// Views are chosen by the URL's fragment: `#/products?primer=&state=&after=`,
// `#/product/<key>`, `#/graph`, `#/jobs`. Every piece of data reaches the
// page through `textContent` or attributes, never as HTML.
'use strict';

const STATES = ['fresh', 'stale', 'expired', 'failing', 'computing'];
const TOKEN_KEY = 'kck-admin-token';
const PAGE_SIZE = 50;

// ---------------------------------------------------------------- elements

/** `h('a', {href: '#/', class: 'x'}, 'text', child)`: an element. */
function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value);
  }
  for (const child of children) element.append(child instanceof Node ? child : String(child));
  return element;
}

function badge(state) {
  return h('span', {class: 'badge ' + (state || 'absent')}, state || 'absent');
}

function productHref(key) {
  return '#/product/' + encodeURIComponent(key);
}

function keyLink(key) {
  return h('a', {class: 'key', href: productHref(key)}, key);
}

/** A time as the operator reads it: local, to the second; ISO on hover. */
function time(iso) {
  if (!iso) return h('span', {class: 'muted'}, '—');
  return h('time', {datetime: iso, title: iso}, timeText(iso));
}

/** A time as text: to the second, with the date unless it is today. */
function timeText(iso) {
  if (!iso) return 'never';
  const date = new Date(iso);
  return new Date().toDateString() === date.toDateString()
    ? date.toLocaleTimeString()
    : date.toLocaleString();
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

function millis(ms) {
  return ms < 1000 ? ms.toFixed(ms < 10 ? 2 : 0) + ' ms' : (ms / 1000).toFixed(2) + ' s';
}

function plural(n, word) {
  return n + ' ' + word + (n === 1 ? '' : 's');
}

// ------------------------------------------------------------------ banner

/** What the banner says, by cause, so that one success clears its own cause. */
let bannerCause = null;

function showBanner(cause, text) {
  const banner = document.getElementById('banner');
  bannerCause = cause;
  banner.textContent = text;
  banner.hidden = false;
}

function clearBanner(...causes) {
  if (bannerCause !== null && causes.includes(bannerCause)) {
    document.getElementById('banner').hidden = true;
    bannerCause = null;
  }
}

// --------------------------------------------------------------------- api

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? {Authorization: 'Bearer ' + token} : {};
}

/** How many API calls were made, and the latest whose answer said whether the store is up. */
let callsMade = 0;
let storeToldBy = 0;

/**
 * Whether call `call`'s answer may say whether the store is up: not if a
 * later call already said, so that of two calls in flight the one made last
 * decides, whichever answers first.
 */
function tellsStore(call) {
  if (call < storeToldBy) return false;
  storeToldBy = call;
  return true;
}

/** Calls the API; answers its JSON (null for an empty answer) or throws ApiError. */
async function api(path, method = 'GET') {
  const call = ++callsMade;
  let response;
  try {
    response = await fetch(path, {method, headers: {Accept: 'application/json', ...authHeaders()}});
  } catch (error) {
    showBanner('unreachable', 'The admin server cannot be reached (' + error.message + ').');
    throw new ApiError(0, 'unreachable', error.message);
  }
  clearBanner('unreachable');
  if (response.ok) {
    if (tellsStore(call)) clearBanner('store');
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
  let error = {kind: 'http_' + response.status, message: response.statusText};
  try {
    error = (await response.json()).error || error;
  } catch (_) {
    // Not our JSON: keep the status line.
  }
  if (response.status === 401) {
    askToken('This admin page needs a token: ' + error.message);
  } else if (response.status === 403) {
    showBanner('forbidden', 'This token may only read; actions need an admin token.');
  } else if (response.status === 503) {
    if (tellsStore(call)) {
      showBanner('store', 'The store is unavailable: ' + error.message +
        '. What is shown may be out of date; the page retries as you use it.');
    }
  } else if (tellsStore(call)) {
    clearBanner('store');
  }
  throw new ApiError(response.status, error.kind, error.message);
}

// ------------------------------------------------------------------- token

function askToken(reason) {
  const form = document.getElementById('token-form');
  form.hidden = false;
  if (reason) showBanner('token', reason);
  document.getElementById('token-input').focus();
}

function setupToken() {
  const form = document.getElementById('token-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const input = document.getElementById('token-input');
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = '';
    form.hidden = true;
    clearBanner('token', 'forbidden');
    live.restart();
    render();
  });
  document.getElementById('token-button').addEventListener('click', () => {
    form.hidden = !form.hidden;
  });
}

// ------------------------------------------------------------------ router

/** Bumped by every render: an answer for an older render is dropped. */
let generation = 0;
/** What the current view shows, for live updates: keys, or null for "any". */
let watched = {keys: new Set(), any: false};

function parseHash() {
  const hash = location.hash.replace(/^#/, '') || '/products';
  const at = hash.indexOf('?');
  const path = at < 0 ? hash : hash.slice(0, at);
  const params = new URLSearchParams(at < 0 ? '' : hash.slice(at + 1));
  return {path, params};
}

async function render() {
  const mine = ++generation;
  clearBanner('action');
  const {path, params} = parseHash();
  const view = path.startsWith('/product/') ? 'products' : path.slice(1);
  for (const link of document.querySelectorAll('header nav a')) {
    link.classList.toggle('active', link.dataset.view === view);
  }
  watched = {keys: new Set(), any: false};
  let content;
  try {
    if (path === '/products') content = await productsView(params);
    else if (path.startsWith('/product/')) content = await productView(decodeURIComponent(path.slice(9)));
    else if (path === '/graph') content = await primerGraphView();
    else if (path === '/jobs') content = await jobsView();
    else content = h('p', {class: 'empty'}, 'Nothing here. ', h('a', {href: '#/products'}, 'See the products.'));
  } catch (error) {
    content = h('div', {class: 'error'},
      h('h1', {}, error.status === 404 ? 'Not found' : 'Cannot show this'),
      h('p', {}, error.message), h('p', {class: 'muted'}, error.kind ? 'error: ' + error.kind : ''));
  }
  if (mine !== generation) return;
  document.getElementById('view').replaceChildren(content);
  document.body.dataset.rendered = String(mine);
}

let pending = null;

/** Renders again soon: many events in a burst cost one render. */
function renderSoon(delay = 1500) {
  if (pending !== null) return;
  pending = setTimeout(() => {
    pending = null;
    render();
  }, delay);
}

// ---------------------------------------------------------------- products

function filterHash(primer, state) {
  const params = new URLSearchParams();
  if (primer) params.set('primer', primer);
  if (state) params.set('state', state);
  const query = params.toString();
  return '#/products' + (query ? '?' + query : '');
}

async function productsView(params) {
  const primer = params.get('primer') || '';
  const state = params.get('state') || '';
  const after = params.get('after') || '';
  const query = new URLSearchParams({limit: String(PAGE_SIZE)});
  if (primer) query.set('primer', primer);
  if (state) query.set('state', state);
  if (after) query.set('after', after);
  const [primers, page] = await Promise.all([api('api/primers'), api('api/products?' + query)]);

  const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
  let complete = true;
  for (const p of primers) {
    if (primer && p.name !== primer) continue;
    for (const s of STATES) totals[s] += p.counts[s];
    complete = complete && p.counts.complete;
  }
  const counts = h('div', {class: 'legend'},
    STATES.map((s) => h('a', {href: filterHash(primer, s)}, badge(s), ' ', totals[s])),
    complete ? null : h('span', {class: 'muted'}, '(counted over the first products only)'));

  const primerSelect = h('select', {name: 'primer', onchange: (e) => {
    location.hash = filterHash(e.target.value, state);
  }}, h('option', {value: ''}, 'all primers'),
  primers.map((p) => h('option', {value: p.name, selected: p.name === primer}, p.name)));
  const stateSelect = h('select', {name: 'state', onchange: (e) => {
    location.hash = filterHash(primer, e.target.value);
  }}, h('option', {value: ''}, 'any state'),
  STATES.map((s) => h('option', {value: s, selected: s === state}, s)));

  const rows = page.products.map((p) => {
    watched.keys.add(p.key);
    return h('tr', {class: 'state-' + p.state, 'data-key': p.key},
      h('td', {}, keyLink(p.key)),
      h('td', {}, badge(p.state)),
      h('td', {class: 'num'}, p.version),
      h('td', {}, time(p.computed_at)),
      h('td', {}, time(p.changed_at)),
      h('td', {class: 'num'}, bytes(p.size)),
      h('td', {class: 'num'}, millis(p.compute_ms)),
      h('td', {}, p.last_error ? p.last_error.message : ''));
  });
  const table = rows.length
    ? h('table', {id: 'products'},
      h('thead', {}, h('tr', {},
        h('th', {}, 'Key'), h('th', {}, 'State'), h('th', {class: 'num'}, 'Version'),
        h('th', {}, 'Computed'), h('th', {}, 'Changed'), h('th', {class: 'num'}, 'Size'),
        h('th', {class: 'num'}, 'Compute'), h('th', {}, 'Last error'))),
      h('tbody', {}, rows))
    : h('p', {class: 'empty'}, after ? 'No more products on this page of the scan.' : 'No products match.');

  const next = page.next
    ? h('a', {href: filterHash(primer, state) + (primer || state ? '&' : '?') + 'after=' + encodeURIComponent(page.next)}, 'Next page →')
    : null;
  const pager = h('div', {class: 'pager'},
    after ? h('a', {href: filterHash(primer, state)}, '← First page') : null,
    next,
    state && next && page.products.length < PAGE_SIZE
      ? h('span', {}, 'A rare state gives short pages: each page examines a bounded slice of the store.')
      : null);

  return h('section', {},
    h('h1', {}, 'Products'),
    counts,
    h('div', {class: 'filters'},
      h('label', {}, 'Primer', primerSelect),
      h('label', {}, 'State', stateSelect)),
    table, pager);
}

// ----------------------------------------------------------------- product

/** Why the product is in its state, in one sentence. */
function why(p, jobs) {
  const running = jobs.running[0];
  const queue = running
    ? 'refreshing now on ' + running.worker
    : jobs.pending
      ? 'refresh queued for ' + timeText(jobs.pending.due_at) +
        (jobs.pending.attempts ? ' (attempt ' + (jobs.pending.attempts + 1) + ')' : '')
      : null;
  const failed = jobs.failed[0];
  switch (p.state) {
    case 'failing': {
      const attempts = Math.max(failed ? failed.attempts : 0,
        jobs.pending ? jobs.pending.attempts : 0, p.last_error ? p.last_error.attempts : 1);
      const error = failed ? failed.error : p.last_error ? p.last_error.message : 'unknown';
      return 'failing: ' + plural(attempts, 'attempt') + ', last error: ' + error +
        (p.last_error ? ' (at ' + timeText(p.last_error.at) + ')' : '') +
        (failed ? '; the refresh job gave up: retry it below' : queue ? '; ' + queue : '') +
        '. The last good value (version ' + p.version + ') is still served.';
    }
    case 'stale':
      return 'stale since ' + timeText(p.stale_at || p.refresh_at) + ', ' +
        (queue || 'no refresh queued: the next read serves it and queues one') + '.';
    case 'expired':
      return 'expired at ' + timeText(p.expires_at) + ': the next read recomputes it' +
        (queue ? '; ' + queue : '') + '.';
    case 'computing':
      return 'being computed now' + (running
        ? ' by ' + running.worker + ', lease until ' + timeText(running.lease_until)
        : ' by a reader in this process') + '.';
    default:
      return 'fresh: computed at ' + timeText(p.computed_at) +
        (p.stale_at ? ', stale at ' + timeText(p.stale_at)
          : p.refresh_at ? ', refresh due at ' + timeText(p.refresh_at)
            : ', kept until a dependency changes') +
        (queue ? '; ' + queue : '') + '.';
  }
}

function neighbours(title, edges) {
  return h('div', {},
    h('h2', {}, title + ' (' + edges.length + ')'),
    edges.length
      ? h('ul', {class: 'links'}, edges.map((edge) => {
        watched.keys.add(edge.key);
        return h('li', {}, badge(edge.state), keyLink(edge.key),
          edge.version === null ? null : h('span', {class: 'muted'}, 'v' + edge.version),
          edge.current ? null : h('span', {class: 'muted', title: 'read an older version'}, 'outdated'));
      }))
      : h('p', {class: 'empty'}, 'none'));
}

/** Runs an action of the product page, then shows the page again. */
function action(label, method, path, kind) {
  return h('button', {type: 'button', class: kind || '', onclick: async (event) => {
    event.target.disabled = true;
    try {
      await api(path, method);
      clearBanner('action', 'forbidden');
    } catch (error) {
      if (error.status !== 401 && error.status !== 403 && error.status !== 503) {
        showBanner('action', label + ' failed: ' + error.message);
      }
    }
    render();
  }}, label);
}

function jobTables(jobs) {
  const rows = [];
  if (jobs.pending) {
    rows.push(h('tr', {}, h('td', {}, 'pending'), h('td', {}, jobs.pending.id),
      h('td', {}, 'due ', time(jobs.pending.due_at)), h('td', {}, jobs.pending.reasons.join(', ')),
      h('td', {class: 'num'}, jobs.pending.attempts), h('td', {}, jobs.pending.error || '')));
  }
  for (const job of jobs.running) {
    rows.push(h('tr', {}, h('td', {}, 'running'), h('td', {}, job.id),
      h('td', {}, job.worker, ', lease until ', time(job.lease_until)), h('td', {}, job.reasons.join(', ')),
      h('td', {class: 'num'}, job.attempts), h('td', {}, '')));
  }
  for (const job of jobs.failed) {
    rows.push(h('tr', {class: 'state-failing'}, h('td', {}, 'failed'), h('td', {}, job.id),
      h('td', {}, retryButton(job.id)), h('td', {}, job.reasons.join(', ')),
      h('td', {class: 'num'}, job.attempts), h('td', {}, job.error)));
  }
  if (!rows.length) return h('p', {class: 'empty'}, 'No refresh job for this product.');
  return h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Id'),
    h('th', {}, 'When'), h('th', {}, 'Reasons'), h('th', {class: 'num'}, 'Attempts'), h('th', {}, 'Error'))),
  h('tbody', {}, rows));
}

function retryButton(id) {
  return action('Retry', 'POST', 'api/jobs/' + id + '/retry', 'primary retry');
}

async function productView(key) {
  const path = 'api/products/' + encodeURIComponent(key);
  watched.keys.add(key);
  let detail;
  try {
    detail = await api(path);
  } catch (error) {
    if (error.status !== 404 || error.kind !== 'not_found') throw error;
    return h('section', {},
      h('h1', {}, key),
      h('p', {class: 'why'}, 'Not stored: nothing has read this product yet, or it was removed. ' +
        'The next read computes it, with only the dependencies it needs.'),
      h('div', {class: 'actions'}, action('Compute now', 'POST', path + '/refresh', 'primary refresh')));
  }
  const p = detail; // The product's fields, with value, neighbours and jobs.
  const {graph} = await api('api/graph?' + new URLSearchParams({key, depth: '2', max_nodes: '40'}));
  const meta = [
    ['Primer', h('a', {href: filterHash(p.primer, '')}, p.primer)],
    ['Version', h('span', {id: 'version'}, p.version)],
    ['Computed', time(p.computed_at)],
    ['Changed', time(p.changed_at)],
    ['Stale at', time(p.stale_at)],
    ['Refresh at', time(p.refresh_at)],
    ['Expires at', time(p.expires_at)],
    ['Last read', time(p.read_at)],
    ['Compute time', millis(p.compute_ms)],
    ['Size', bytes(p.size)],
    ['Code version', p.code_version],
    ['Last error', p.last_error ? p.last_error.message : h('span', {class: 'muted'}, 'none')],
  ];
  return h('section', {},
    h('h1', {}, badge(p.state), ' ', h('span', {class: 'key'}, p.key)),
    h('p', {class: 'why ' + p.state, id: 'why'}, why(p, detail.jobs)),
    h('div', {class: 'actions'},
      action('Refresh now', 'POST', path + '/refresh', 'primary refresh'),
      action('Invalidate', 'POST', path + '/invalidate'),
      action('Remove', 'DELETE', path, 'danger')),
    h('div', {class: 'columns'},
      h('div', {}, h('h2', {}, 'Metadata'),
        h('dl', {class: 'meta'}, meta.map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)]))),
      h('div', {}, h('h2', {}, 'Value'),
        h('pre', {class: 'value', id: 'value'}, JSON.stringify(detail.value, null, 2)))),
    h('div', {class: 'columns'},
      neighbours('Dependencies', detail.dependencies),
      neighbours('Dependents', detail.dependents)),
    h('h2', {}, 'Refresh jobs'),
    jobTables(detail.jobs),
    h('h2', {}, 'Dependency graph'),
    h('p', {class: 'muted'}, 'Two steps each way: dependencies on the left, dependents on the right.' +
      (graph.truncated ? ' Truncated: the graph is larger than shown.' : '')),
    legend(),
    drawGraph(columnsOfProducts(graph), key));
}

// ------------------------------------------------------------------- graph

/** The graph around a product in columns by distance: dependencies left. */
function columnsOfProducts(graph) {
  const byDistance = new Map();
  for (const node of graph.nodes) {
    if (!byDistance.has(node.distance)) byDistance.set(node.distance, []);
    byDistance.get(node.distance).push({
      id: node.key, label: node.key, state: node.state, href: productHref(node.key),
    });
  }
  const columns = [...byDistance.keys()].sort((a, b) => a - b)
    .map((distance) => byDistance.get(distance).sort((a, b) => a.id.localeCompare(b.id)));
  // An edge is [dependent, dependency]: drawn from the dependency.
  return {columns, edges: graph.edges.map(([dependent, dependency]) => [dependency, dependent])};
}

/** The primers in layers: a primer one step right of its deepest dependency. */
function columnsOfPrimers(graph, primers) {
  const dependencies = new Map(graph.primers.map((name) => [name, []]));
  for (const [primer, dependency] of graph.edges) dependencies.get(primer)?.push(dependency);
  const layer = new Map();
  const layerOf = (name, seen) => {
    if (layer.has(name)) return layer.get(name);
    if (seen.has(name)) return 0; // A cycle: the registry refuses them, but never loop.
    seen.add(name);
    const deps = dependencies.get(name) || [];
    const value = deps.length ? 1 + Math.max(...deps.map((d) => layerOf(d, seen))) : 0;
    layer.set(name, value);
    return value;
  };
  const counts = new Map(primers.map((p) => [p.name, p.counts]));
  const columns = [];
  for (const name of [...graph.primers].sort()) {
    const at = layerOf(name, new Set());
    while (columns.length <= at) columns.push([]);
    const c = counts.get(name);
    const worst = c && ['failing', 'expired', 'stale', 'computing', 'fresh'].find((s) => c[s] > 0);
    columns[at].push({
      id: name, label: name, state: worst || null, href: filterHash(name, ''),
      sub: c ? STATES.filter((s) => c[s] > 0).map((s) => c[s] + ' ' + s).join(' · ') || 'no products' : '',
    });
  }
  return {columns, edges: graph.edges.map(([primer, dependency]) => [dependency, primer])};
}

function legend() {
  return h('div', {class: 'legend'}, STATES.map((s) => badge(s)), badge(null));
}

/** Draws columns of nodes and the edges between them as SVG. */
function drawGraph(model, center) {
  const CHAR = 7.3, PAD = 12, GAP_X = 60, GAP_Y = 16, MAX_CHARS = 44;
  const clip = (text) => text.length > MAX_CHARS ? text.slice(0, MAX_CHARS - 1) + '…' : text;
  const heightOf = (node) => node.sub ? 44 : 30;
  const place = new Map();
  let x = 20;
  const columnHeights = model.columns.map((column) =>
    column.reduce((sum, node) => sum + heightOf(node) + GAP_Y, -GAP_Y));
  const height = Math.max(60, ...columnHeights) + 40;
  for (const [index, column] of model.columns.entries()) {
    const width = Math.max(...column.map((n) => Math.max(clip(n.label).length, n.sub ? n.sub.length * 0.85 : 0))) * CHAR + 2 * PAD;
    let y = (height - columnHeights[index]) / 2;
    for (const node of column) {
      place.set(node.id, {node, x, y, width, height: heightOf(node)});
      y += heightOf(node) + GAP_Y;
    }
    x += width + GAP_X;
  }
  const root = svg('svg', {width: Math.max(x - GAP_X + 20, 200), height, role: 'img',
    'aria-label': 'dependency graph'});
  root.append(svg('defs', {}, svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: '10', refY: '5',
    markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse'},
  svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8c959f'}))));
  for (const [from, to] of model.edges) {
    const a = place.get(from), b = place.get(to);
    if (!a || !b) continue;
    const x1 = a.x + a.width, y1 = a.y + a.height / 2, x2 = b.x, y2 = b.y + b.height / 2;
    const bend = Math.max(30, Math.abs(x2 - x1) / 2);
    root.append(svg('path', {class: 'edge', 'marker-end': 'url(#arrow)',
      d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`}));
  }
  for (const {node, x: nx, y: ny, width, height: nh} of place.values()) {
    const group = svg('a', {href: node.href,
      class: 'node ' + (node.state || 'absent') + (node.id === center ? ' center' : ''),
      'data-id': node.id});
    group.append(svg('title', {}, node.id + (node.state ? ' (' + node.state + ')' : ' (not stored)')));
    group.append(svg('rect', {x: nx, y: ny, width, height: nh, rx: 6}));
    group.append(svg('text', {x: nx + PAD, y: ny + 19}, clip(node.label)));
    if (node.sub) group.append(svg('text', {x: nx + PAD, y: ny + 35, class: 'count'}, node.sub));
    root.append(group);
  }
  return h('div', {class: 'graph', id: 'graph'}, root);
}

async function primerGraphView() {
  watched.any = true;
  const [{primers: graph}, primers] = await Promise.all([api('api/graph'), api('api/primers')]);
  const rows = primers.map((p) => h('tr', {},
    h('td', {}, h('a', {href: filterHash(p.name, '')}, p.name)),
    h('td', {}, h('code', {}, p.template)),
    h('td', {}, p.depends_on.join(', ') || h('span', {class: 'muted'}, 'none')),
    h('td', {}, policyText(p.policy)),
    h('td', {class: 'num'}, p.counts.total + (p.counts.complete ? '' : '+'))));
  return h('section', {},
    h('h1', {}, 'Primers and their dependencies'),
    h('p', {class: 'muted'}, 'Each primer right of what it depends on, coloured by its worst product; ' +
      'click one to list its products.'),
    legend(),
    drawGraph(columnsOfPrimers(graph, primers), null),
    h('h2', {}, 'Primers'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Primer'), h('th', {}, 'Key'),
      h('th', {}, 'Depends on'), h('th', {}, 'Policy'), h('th', {class: 'num'}, 'Products'))),
    h('tbody', {}, rows)));
}

function duration(ms) {
  if (ms % 3600000 === 0) return ms / 3600000 + ' h';
  if (ms % 60000 === 0) return ms / 60000 + ' min';
  if (ms % 1000 === 0) return ms / 1000 + ' s';
  return ms + ' ms';
}

function policyText(policy) {
  const parts = [];
  if (policy.on_demand) parts.push('fresh on every read');
  if (policy.refresh_ms !== null) parts.push('refresh every ' + duration(policy.refresh_ms));
  if (policy.schedule) parts.push('schedule ' + policy.schedule);
  if (policy.stale_after_ms !== null) parts.push('stale after ' + duration(policy.stale_after_ms));
  if (policy.expire_after_ms !== null) parts.push('expires after ' + duration(policy.expire_after_ms));
  if (policy.stale_if_error) parts.push('stale if error');
  return parts.join(', ') || 'kept until a dependency changes';
}

// -------------------------------------------------------------------- jobs

async function jobsView() {
  watched.any = true;
  const jobs = await api('api/jobs?limit=100');
  const reasons = (job) => job.reasons.join(', ');
  const table = (id, heads, rows, empty) => rows.length
    ? h('table', {id}, h('thead', {}, h('tr', {}, heads.map((t) => h('th', {}, t)))), h('tbody', {}, rows))
    : h('p', {class: 'empty', id}, empty);
  const failed = jobs.failed.map((job) => h('tr', {class: 'state-failing', 'data-key': job.key},
    h('td', {}, keyLink(job.key)), h('td', {class: 'num'}, job.attempts), h('td', {}, job.error),
    h('td', {}, reasons(job)),
    h('td', {}, h('div', {class: 'actions'}, retryButton(job.id),
      action('Drop', 'DELETE', 'api/jobs/' + job.id, 'danger')))));
  const running = jobs.running.map((job) => h('tr', {},
    h('td', {}, keyLink(job.key)), h('td', {}, job.worker), h('td', {}, time(job.lease_until)),
    h('td', {class: 'num'}, job.attempts), h('td', {}, reasons(job))));
  const pendingRows = jobs.pending.map((job) => h('tr', {},
    h('td', {}, keyLink(job.key)), h('td', {}, time(job.due_at)), h('td', {class: 'num'}, job.priority),
    h('td', {}, reasons(job)), h('td', {class: 'num'}, job.attempts), h('td', {}, job.error || ''),
    h('td', {}, action('Drop', 'DELETE', 'api/jobs/' + job.id, 'danger'))));
  const count = (n, what) => h('div', {}, h('strong', {}, n + (n === 100 ? '+' : '')), what);
  return h('section', {},
    h('h1', {}, 'Refresh jobs'),
    h('div', {class: 'counts'}, count(jobs.failed.length, 'failed'),
      count(jobs.running.length, 'running'), count(jobs.pending.length, 'pending')),
    h('h2', {}, 'Failed'),
    table('failed', ['Key', 'Attempts', 'Last error', 'Reasons', ''], failed, 'No failed jobs.'),
    h('h2', {}, 'Running'),
    table('running', ['Key', 'Worker', 'Lease until', 'Attempts', 'Reasons'], running, 'Nothing running.'),
    h('h2', {}, 'Pending'),
    table('pending', ['Key', 'Due', 'Priority', 'Reasons', 'Attempts', 'Last error', ''], pendingRows,
      'Nothing pending.'));
}

// -------------------------------------------------------------------- live

function setLiveStatus(text, on) {
  const status = document.getElementById('live-status');
  status.textContent = 'live: ' + text;
  status.classList.toggle('on', Boolean(on));
}

function showEvent(kind, data) {
  const list = document.getElementById('events');
  const now = new Date().toLocaleTimeString();
  // The text repeats the kind and key: keep what it adds ("waited 2ms").
  const prefix = kind + ' ' + (data.key || '');
  const detail = kind === 'missed' ? '' : data.text.startsWith(prefix)
    ? data.text.slice(prefix.length).replace(/^:\s*/, '') : data.text;
  const item = kind === 'missed'
    ? h('li', {}, h('time', {}, now), h('span', {class: 'kind'}, 'missed ' + data + ' events'))
    : h('li', {'data-kind': kind}, h('time', {}, now), h('span', {class: 'kind'}, kind), ' ',
      keyLink(data.key), detail ? h('div', {class: 'muted'}, detail) : null);
  list.prepend(item);
  while (list.children.length > 100) list.lastElementChild.remove();
}

/** The cache's live events, read from `api/events` with the token. */
const live = {
  controller: null,

  restart() {
    if (this.controller) this.controller.abort();
    this.start();
  },

  async start() {
    const controller = new AbortController();
    this.controller = controller;
    let delay = 1000;
    while (this.controller === controller) {
      try {
        // EventSource cannot send a token: read the stream with fetch.
        const response = await fetch('api/events', {signal: controller.signal,
          headers: {Accept: 'text/event-stream', ...authHeaders()}});
        if (response.status === 401 || response.status === 403) {
          setLiveStatus('needs a token', false);
          return;
        }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        setLiveStatus('on', true);
        delay = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value;
          let at;
          while ((at = buffer.indexOf('\n\n')) >= 0) {
            this.dispatch(buffer.slice(0, at));
            buffer = buffer.slice(at + 2);
          }
        }
      } catch (_) {
        if (controller.signal.aborted) return;
      }
      setLiveStatus('reconnecting', false);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30000);
    }
  },

  /** One server-sent event: `event:` and `data:` lines; `:` lines keep the stream alive. */
  dispatch(block) {
    let kind = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) kind = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (!data.length) return;
    if (kind === 'missed') {
      showEvent(kind, data.join('\n'));
      renderSoon();
      return;
    }
    let event;
    try {
      event = JSON.parse(data.join('\n'));
    } catch (_) {
      return; // Not ours: skip it, keep the stream.
    }
    showEvent(kind, event);
    // A whole view (jobs, graph) changes with any event: less often.
    if (watched.keys.has(event.key)) renderSoon();
    else if (watched.any) renderSoon(5000);
  },
};

// ------------------------------------------------------------------- start

window.addEventListener('hashchange', render);
setupToken();
render();
live.start();
