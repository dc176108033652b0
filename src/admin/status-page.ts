/**
 * The status page served at `GET /`: one self-contained HTML document (inline CSS and JS, no
 * external resource, works offline) that polls `GET /status` every second and renders it.
 *
 * The page itself holds no data, so `/` is served without a token; the data comes from
 * `/status`, which needs one. The page takes the token from the URL fragment
 * (`http://host:port/#token=SECRET` — a fragment is never sent to the server nor logged by it),
 * keeps it in sessionStorage (gone when the tab closes), removes it from the address bar, and
 * asks with a prompt when it has none or the token is refused.
 *
 * Data is only ever inserted with `textContent` (never as HTML), and the Content-Security-Policy
 * allows exactly this script and style (by hash) and connections to this origin only.
 *
 * Every time is shown in UTC (operators of one cluster sit in several time zones, and logs and
 * the audit log are in UTC too). The page fits a 390 px wide phone: below 700 px the chains table
 * turns into one block per chain whose cells carry their own labels, and long values (addresses,
 * endpoints, errors) wrap anywhere instead of widening the page.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --dim: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
h1 small { font-size: .8rem; font-weight: normal; }
h2 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .15rem 1rem; margin: 0; }
dt { color: var(--dim); }
dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .2rem .8rem .2rem 0; vertical-align: top; }
th { color: var(--dim); font-weight: normal; border-bottom: 1px solid var(--dim); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, monospace; font-size: .85rem; }
th, .nowrap { white-space: nowrap; }
.wrap { overflow-wrap: anywhere; }
.ok { color: var(--ok); }
.bad { color: var(--bad); }
.dim { color: var(--dim); }
#banner { padding: .4rem .6rem; margin-bottom: .8rem; border: 1px solid var(--bad); display: none; }
#banner.show { display: block; }
ul { margin: 0; padding-left: 1rem; }
@media (max-width: 700px) {
  body { margin: .75rem; }
  #chains-table thead { display: none; }
  #chains-table, #chains-table tbody, #chains-table tr, #chains-table td { display: block; }
  #chains-table tr { border-top: 1px solid var(--dim); padding: .4rem 0; }
  #chains-table td { padding: .1rem 0; }
  #chains-table td, #chains-table .mono { white-space: normal; overflow-wrap: anywhere; }
  #chains-table td.num { text-align: left; }
  #chains-table td[data-label]::before { content: attr(data-label) ": "; color: var(--dim); }
}
`;

// Plain ES5-style script: no template literals, so it can live inside this TS template string.
const SCRIPT = `
(function () {
  'use strict';
  var KEY = 'cometkms-admin-token';
  var POLL_MS = 1000;
  var RATE_WINDOW_MS = 30000;
  var seen = {};
  var stopped = false;

  function takeFragmentToken() {
    var m = /(?:^#|&)token=([^&]*)/.exec(window.location.hash);
    if (!m) return;
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    window.history.replaceState(null, '', window.location.pathname + window.location.search);
  }

  function askToken() {
    var t = window.prompt('CometKMS admin token (kept in this tab only):');
    if (t) sessionStorage.setItem(KEY, t.trim());
    return !!t;
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function setText(id, text, cls) {
    var e = document.getElementById(id);
    e.textContent = String(text);
    e.className = cls || '';
  }

  function yesNo(v, good) { return v ? el('span', good || 'yes', 'ok') : el('span', 'no', 'bad'); }

  function fill(id, pairs) {
    var dl = document.getElementById(id);
    dl.replaceChildren();
    pairs.forEach(function (p) {
      dl.appendChild(el('dt', p[0]));
      var dd = el('dd');
      if (p[1] instanceof Node) dd.appendChild(p[1]); else dd.textContent = String(p[1]);
      dl.appendChild(dd);
    });
  }

  // "2025-01-01 12:00:00 UTC": every time on the page is UTC, to the second.
  function utc(ms) {
    return new Date(ms).toISOString().replace('T', ' ').replace(/\\.\\d+Z$/, ' UTC');
  }

  function ago(ms, now) {
    var s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 120) return s + 's ago';
    if (s < 7200) return Math.round(s / 60) + 'm ago';
    if (s < 172800) return Math.round(s / 3600) + 'h ago';
    return Math.round(s / 86400) + 'd ago';
  }

  // Pieces that must not break inside but may break between each other, as one span.
  function pieces(parts, cls) {
    var span = el('span', null, cls);
    parts.forEach(function (p, i) {
      if (i > 0) span.appendChild(document.createTextNode(' '));
      span.appendChild(el('span', p, 'nowrap'));
    });
    return span;
  }

  function lastSigned(iso, now) {
    if (!iso) return el('span', 'never');
    var ms = Date.parse(iso);
    return pieces([utc(ms), '(' + ago(ms, now) + ')']);
  }

  function duration(s) {
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
  }

  // Heights per minute over the last RATE_WINDOW_MS of polls; reset when a height goes back.
  function rate(chainId, height, now) {
    var h = seen[chainId] || [];
    if (h.length && height < h[h.length - 1].height) h = [];
    h.push({ t: now, height: height });
    while (h.length > 2 && now - h[0].t > RATE_WINDOW_MS) h.shift();
    seen[chainId] = h;
    var first = h[0], span = now - first.t;
    if (span < 1500) return '…';
    return ((height - first.height) * 60000 / span).toFixed(1) + ' h/min';
  }

  function render(s) {
    var now = Date.now();
    document.title = 'CometKMS ' + s.node_id + ' (' + s.role + ')';
    setText('node', s.node_id);
    fill('overview', [
      ['version', s.version],
      ['mode', s.mode],
      ['role', el('span', s.role, s.role === 'leader' ? 'ok' : '')],
      ['leader', s.leader_id === null ? el('span', 'none known', 'bad') : s.leader_id],
      ['term', s.term],
      ['uptime', duration(s.uptime_s) + ' (since ' + utc(now - s.uptime_s * 1000) + ')']
    ]);
    var hsm = [
      ['token', s.hsm.token_label],
      ['reachable', yesNo(s.hsm.reachable)],
      ['signing session', s.hsm.signing_session ? el('span', 'open', 'ok') : el('span', 'closed', 'dim')]
    ];
    if (s.hsm.last_error) hsm.push(['last error', el('span', s.hsm.last_error, 'bad')]);
    fill('hsm', hsm);

    var cluster = document.getElementById('cluster-section');
    cluster.hidden = !s.cluster;
    if (s.cluster) {
      fill('cluster', [
        ['etcd', yesNo(s.cluster.etcd_healthy, 'healthy')],
        ['endpoints', s.cluster.etcd_endpoints.join(', ')],
        ['leader changes', s.cluster.leader_changes]
      ]);
      var mb = document.getElementById('members');
      mb.replaceChildren();
      s.cluster.members.forEach(function (m) {
        var tr = el('tr');
        tr.appendChild(el('td', m.node_id, 'nowrap'));
        tr.appendChild(el('td', m.forward_addr, 'wrap'));
        tr.appendChild(el('td', m.leader ? 'leader' : '', m.leader ? 'ok nowrap' : ''));
        mb.appendChild(tr);
      });
    }

    var tb = document.getElementById('chains');
    tb.replaceChildren();
    s.chains.forEach(function (c) {
      var up = c.validators.filter(function (v) { return v.connected; }).length;
      var tr = el('tr');
      tr.dataset.chain = c.chain_id;
      function cell(field, label, content, cls) {
        var td = content instanceof Node ? el('td', null, cls) : el('td', content, cls);
        if (content instanceof Node) td.appendChild(content);
        td.dataset.field = field;
        if (label) td.dataset.label = label;
        tr.appendChild(td);
        return td;
      }
      // The chain, its key and the key's address share the first cell: one column fewer keeps
      // the desktop table inside the window, and on a phone the three lines explain themselves.
      var id = el('div');
      id.appendChild(el('strong', c.chain_id)).dataset.field = 'chain';
      id.appendChild(el('div', c.key_type + ' / ' + c.protocol, 'dim')).dataset.field = 'key';
      id.appendChild(el('div', c.address, 'mono nowrap')).dataset.field = 'address';
      cell('id', null, id);
      cell('hrs', 'h/r/s', c.height + '/' + c.round + '/' + c.step, 'num nowrap hrs');
      cell('last-signed', 'last signed', lastSigned(c.last_signed_at, now));
      cell('rate', 'rate', rate(c.chain_id, c.height, now), 'num nowrap');
      var refused = [String(c.refused)];
      if (c.double_sign_refused) refused.push('(' + c.double_sign_refused + ' double-sign)');
      cell('refused', 'refused', pieces(refused), 'num' + (c.double_sign_refused ? ' bad' : ''));
      cell('errors', 'errors', c.errors, 'num nowrap' + (c.errors ? ' bad' : ''));
      var vt = el('div');
      vt.appendChild(el('span', up + '/' + c.validators.length + ' up', up === c.validators.length ? 'ok' : 'bad'));
      var ul = el('ul');
      c.validators.forEach(function (v) {
        var li = el('li');
        li.appendChild(el('span', v.connected ? '● ' : '○ ', v.connected ? 'ok' : 'bad'));
        li.appendChild(el('span', v.addr + (v.remote_node_id ? ' (' + v.remote_node_id + ')' : '')));
        li.appendChild(el('span', ' connects: ' + v.connects, 'dim'));
        ul.appendChild(li);
      });
      vt.appendChild(ul);
      cell('validators', 'validators', vt, 'wrap');
      tb.appendChild(tr);
    });
    setText('updated', 'updated ' + utc(now), 'dim');
  }

  function problem(text, withButton) {
    var b = document.getElementById('banner');
    b.replaceChildren(el('span', text + ' '));
    if (withButton) {
      var btn = el('button', 'enter token');
      btn.addEventListener('click', function () { if (askToken()) { stopped = false; poll(); } });
      b.appendChild(btn);
    }
    b.className = 'show';
  }

  function poll() {
    if (stopped) return;
    var token = sessionStorage.getItem(KEY);
    if (!token) { stopped = true; problem('This page needs the admin token.', true); return; }
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, 3000);
    fetch('/status', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', signal: ctl.signal })
      .then(function (r) {
        if (r.status === 401) {
          sessionStorage.removeItem(KEY);
          stopped = true;
          problem('The admin token was refused.', true);
          return null;
        }
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (s) {
        if (!s) return;
        document.getElementById('banner').className = '';
        render(s);
      })
      .catch(function (e) { problem('Cannot reach the node: ' + (e && e.message ? e.message : e), false); })
      .finally(function () { clearTimeout(timer); if (!stopped) setTimeout(poll, POLL_MS); });
  }

  takeFragmentToken();
  if (!sessionStorage.getItem(KEY)) askToken();
  poll();
})();
`;

const sha256Base64 = (text: string): string => createHash('sha256').update(text).digest('base64');

/** The page's Content-Security-Policy: its own inline script and style only, fetches to itself. */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src 'sha256-${sha256Base64(SCRIPT)}'`,
  `style-src 'sha256-${sha256Base64(STYLE)}'`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The whole page. */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>CometKMS</title>
<style>${STYLE}</style>
</head>
<body>
<div id="banner" role="alert"></div>
<h1>CometKMS <span id="node">…</span> <small id="updated" class="dim"></small></h1>
<dl id="overview"></dl>
<h2>HSM</h2>
<dl id="hsm"></dl>
<section id="cluster-section" hidden>
<h2>Cluster</h2>
<dl id="cluster"></dl>
<table><thead><tr><th>member</th><th>forward address</th><th></th></tr></thead><tbody id="members"></tbody></table>
</section>
<h2>Chains</h2>
<table id="chains-table">
<thead><tr><th>chain / key / address</th><th>height/round/step</th><th>last signed</th><th>rate</th><th>refused</th><th>errors</th><th>validators</th></tr></thead>
<tbody id="chains"></tbody>
</table>
<script>${SCRIPT}</script>
</body>
</html>
`;
