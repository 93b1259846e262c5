// deepserve usage console: a small single-page app on billing's admin API. No external assets: everything is here.
(function () {
  'use strict';

  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const COLORS = ['#4d6bfe', '#f59f00', '#12b886', '#e64980', '#7950f2', '#15aabf'];
  const state = { accounts: [] };

  const key = () => sessionStorage.getItem('deepserve.admin');

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.substring(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function toast(text) {
    const t = document.getElementById('toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ 'Authorization': 'Bearer ' + key() }, options.body ? { 'Content-Type': 'application/json' } : {});
    const r = await fetch(path, Object.assign({}, options, { headers }));
    if (r.status === 401) {
      sessionStorage.removeItem('deepserve.admin');
      route();
      throw new Error('signed out');
    }
    const type = r.headers.get('Content-Type') || '';
    const body = type.includes('json') ? await r.json() : await r.text();
    if (!r.ok) throw new Error(body && body.error ? body.error.message : ('HTTP ' + r.status));
    return body;
  }

  const money = (v) => '$' + Number(v).toFixed(Number(v) > 0 && Number(v) < 1 ? 6 : 2);
  const int = (v) => Number(v).toLocaleString('en-US');
  const day = (d) => d.toISOString().substring(0, 10);

  // ---- login

  function login() {
    nav.hidden = true;
    const input = el('input', { type: 'password', id: 'admin-key', placeholder: 'dsadm-…', autocomplete: 'off' });
    const error = el('div', { class: 'error', id: 'login-error' });
    const form = el('form', {
      class: 'card login', onsubmit: async (e) => {
        e.preventDefault();
        const candidate = input.value.trim();
        try {
          const r = await fetch('/admin/accounts', { headers: { 'Authorization': 'Bearer ' + candidate } });
          if (!r.ok) {
            error.textContent = r.status === 401 ? 'That admin key was not accepted.' : 'The admin API answered ' + r.status + '.';
            return;
          }
          sessionStorage.setItem('deepserve.admin', candidate);
          location.hash = '#/overview';
          route();
        } catch (err) {
          error.textContent = 'Billing cannot be reached: ' + err.message;
        }
      }
    },
      el('h1', {}, 'Sign in'),
      el('p', { class: 'muted' }, 'Use the admin key printed by ./deepserve up (also in .deepserve/secrets/admin-key).'),
      el('label', {}, 'Admin key', input),
      el('div', { style: 'margin-top:14px' }, el('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in')),
      error);
    main.replaceChildren(form);
    input.focus();
  }

  // ---- charts

  function barChart(days, series, valueOf, format) {
    const w = 1040, h = 240, left = 84, bottom = 28, top = 10;
    const totals = days.map((d) => series.reduce((s, m) => s + valueOf(d, m), 0));
    const max = Math.max(1e-12, ...totals);
    const bw = (w - left) / days.length;
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('width', '100%');
    const add = (name, attrs, text) => {
      const n = document.createElementNS('http://www.w3.org/2000/svg', name);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.append(n);
      return n;
    };
    for (let i = 0; i <= 4; i++) {
      const y = top + (h - bottom - top) * (1 - i / 4);
      add('line', { x1: left, x2: w, y1: y, y2: y, stroke: '#e3e6eb' });
      add('text', { x: left - 8, y: y + 4, 'text-anchor': 'end' }, format(max * i / 4));
    }
    days.forEach((d, i) => {
      let y = h - bottom;
      series.forEach((m, k) => {
        const v = valueOf(d, m);
        const bh = (h - bottom - top) * v / max;
        if (bh > 0) add('rect', { x: left + i * bw + 2, y: y - bh, width: Math.max(1, bw - 4), height: bh, fill: COLORS[k % COLORS.length], class: 'bar' })
          .append(Object.assign(document.createElementNS('http://www.w3.org/2000/svg', 'title'), { textContent: `${d} ${m}: ${format(v)}` }));
        y -= bh;
      });
      if (days.length <= 16 || i % Math.ceil(days.length / 10) === 0) add('text', { x: left + i * bw + bw / 2, y: h - 8, 'text-anchor': 'middle' }, d.substring(5));
    });
    const legend = el('div', { class: 'legend' }, series.map((m, k) => el('span', {}, el('i', { style: `background:${COLORS[k % COLORS.length]}` }), m)));
    return el('div', {}, svg, legend);
  }

  // ---- pages

  async function overview() {
    const since = new Date(Date.now() - 29 * 86400000);
    const [usage, accounts] = await Promise.all([api('/admin/usage?group=day&from=' + day(since) + 'T00:00:00Z'), api('/admin/accounts')]);
    const days = [];
    for (let i = 0; i < 30; i++) days.push(day(new Date(since.getTime() + i * 86400000)));
    const models = [...new Set(usage.data.map((r) => r.model))].sort();
    const cell = {};
    for (const r of usage.data) {
      const k = r.period.substring(0, 10) + '|' + r.model;
      const c = cell[k] || (cell[k] = { cost: 0, tokens: 0 });
      c.cost += Number(r.cost);
      c.tokens += r.prompt_cache_hit_tokens + r.prompt_cache_miss_tokens + r.completion_tokens;
    }
    const t = usage.totals;
    const balance = accounts.data.reduce((s, a) => s + Number(a.total_balance), 0);
    main.replaceChildren(
      el('h1', {}, 'Overview'),
      el('div', { class: 'grid' },
        stat('Spend, last 30 days', money(t.cost), 'stat-spend'),
        stat('Requests', int(t.requests), 'stat-requests'),
        stat('Tokens (in / out)', int(t.prompt_cache_hit_tokens + t.prompt_cache_miss_tokens) + ' / ' + int(t.completion_tokens), 'stat-tokens'),
        stat('Cache hit share', pct(t.prompt_cache_hit_tokens, t.prompt_cache_hit_tokens + t.prompt_cache_miss_tokens), 'stat-cache'),
        stat('Balance, all accounts', money(balance), 'stat-balance')),
      el('div', { class: 'card', id: 'spend-chart' }, el('h2', {}, 'Daily spend by model'),
        models.length ? barChart(days, models, (d, m) => (cell[d + '|' + m] || {}).cost || 0, (v) => money(v)) : el('p', { class: 'muted' }, 'No usage yet.')),
      el('div', { class: 'card', id: 'token-chart' }, el('h2', {}, 'Daily tokens by model'),
        models.length ? barChart(days, models, (d, m) => (cell[d + '|' + m] || {}).tokens || 0, (v) => int(Math.round(v))) : el('p', { class: 'muted' }, 'No usage yet.')));
  }

  const pct = (a, b) => b ? (100 * a / b).toFixed(1) + '%' : '–';
  const stat = (label, value, id) => el('div', { class: 'card stat', id }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));

  function accountSelect(id, withAll) {
    return el('select', { id }, withAll ? el('option', { value: '' }, 'All accounts') : null,
      state.accounts.map((a) => el('option', { value: a.id }, a.name + ' (' + a.id.substring(0, 13) + ')')));
  }

  async function keys() {
    state.accounts = (await api('/admin/accounts')).data;
    if (!state.accounts.length) {
      main.replaceChildren(el('h1', {}, 'API keys'), el('p', { class: 'muted' }, 'Create an account on the Balances page first.'));
      return;
    }
    const select = accountSelect('keys-account', false);
    const list = el('div', { id: 'keys-list' });
    const secret = el('div', { id: 'new-secret' });
    const name = el('input', { id: 'key-name', placeholder: 'e.g. backend', required: true });
    const models = el('input', { id: 'key-models', placeholder: 'all models' });
    const rpm = el('input', { id: 'key-rpm', type: 'number', min: 1, placeholder: 'no limit' });
    const tpm = el('input', { id: 'key-tpm', type: 'number', min: 1, placeholder: 'no limit' });
    const cap = el('input', { id: 'key-cap', inputmode: 'decimal', placeholder: 'no cap' });
    // what a capped key has spent (settled by the gateways) against its cap
    const capCell = (k) => {
      if (k.spend_cap == null) return el('td', { class: 'cap' }, '–');
      const used = Number(k.spend_cap) > 0 ? Math.min(100, 100 * Number(k.spent) / Number(k.spend_cap)) : 100;
      return el('td', { class: 'cap' }, money(k.spent) + ' of ' + money(k.spend_cap) + ' ',
        el('meter', { min: 0, max: 100, high: 90, value: used.toFixed(1), title: used.toFixed(1) + '%' }));
    };
    async function refresh() {
      const account = select.value;
      const [ks, usage] = await Promise.all([api('/admin/accounts/' + account + '/keys'), api('/admin/usage?group=month&account=' + account)]);
      const spend = {};
      for (const r of usage.data) spend[r.api_key_id] = (spend[r.api_key_id] || 0) + Number(r.cost);
      list.replaceChildren(el('table', {},
        el('thead', {}, el('tr', {}, ['Name', 'Key', 'Models', 'RPM', 'TPM', 'Created', 'Last used', 'Spend', 'Spend cap', 'Status', ''].map((h) => el('th', {}, h)))),
        el('tbody', {}, ks.data.map((k) => el('tr', { 'data-key': k.id },
          el('td', {}, k.name), el('td', {}, el('code', {}, k.prefix)), el('td', {}, k.models ? k.models.join(', ') : 'all'),
          el('td', {}, k.rpm || '–'), el('td', {}, k.tpm || '–'), el('td', {}, k.created_at.substring(0, 16).replace('T', ' ')),
          el('td', {}, k.last_used_at ? k.last_used_at.substring(0, 16).replace('T', ' ') : 'never'),
          el('td', { class: 'num' }, money(spend[k.id] || 0)),
          capCell(k),
          el('td', {}, el('span', { class: k.revoked_at ? 'badge revoked' : 'badge' }, k.revoked_at ? 'revoked' : 'active')),
          el('td', {}, k.revoked_at ? '' : el('button', {
            class: 'danger', onclick: async () => {
              if (!confirm('Revoke ' + k.name + '? Requests with it fail at once.')) return;
              await api('/admin/keys/' + k.id, { method: 'DELETE' });
              toast('Key revoked');
              refresh();
            }
          }, 'Revoke')))))));
    }
    select.addEventListener('change', () => { secret.replaceChildren(); refresh(); });
    const form = el('form', {
      class: 'inline', onsubmit: async (e) => {
        e.preventDefault();
        const body = { name: name.value.trim() };
        if (models.value.trim()) body.models = models.value.split(',').map((s) => s.trim()).filter(Boolean);
        if (rpm.value) body.rpm = Number(rpm.value);
        if (tpm.value) body.tpm = Number(tpm.value);
        if (cap.value.trim()) body.spend_cap = cap.value.trim();
        try {
          const k = await api('/admin/accounts/' + select.value + '/keys', { method: 'POST', body: JSON.stringify(body) });
          secret.replaceChildren(el('div', { class: 'secret' },
            el('strong', {}, 'Copy this key now: it is shown only once. '),
            el('div', {}, el('code', { id: 'secret-value' }, k.key)),
            el('button', { class: 'secondary', type: 'button', onclick: () => navigator.clipboard && navigator.clipboard.writeText(k.key).then(() => toast('Copied')) }, 'Copy')));
          name.value = '';
          cap.value = '';
          refresh();
        } catch (err) {
          toast(err.message);
        }
      }
    }, el('label', {}, 'Name', name), el('label', {}, 'Models (comma-separated)', models), el('label', {}, 'Requests/min', rpm),
      el('label', {}, 'Tokens/min', tpm), el('label', {}, 'Spend cap', cap), el('button', { class: 'primary', type: 'submit', id: 'create-key' }, 'Create key'));
    main.replaceChildren(el('h1', {}, 'API keys'),
      el('div', { class: 'card' }, el('label', {}, 'Account', select)),
      el('div', { class: 'card' }, el('h2', {}, 'New key'), form, secret),
      el('div', { class: 'card' }, el('h2', {}, 'Keys'), list));
    refresh();
  }

  async function usage() {
    state.accounts = (await api('/admin/accounts')).data;
    const account = accountSelect('usage-account', true);
    const keyInput = el('input', { id: 'usage-key', placeholder: 'key id' });
    const model = el('input', { id: 'usage-model', placeholder: 'any model' });
    const group = el('select', { id: 'usage-group' }, ['hour', 'day', 'month'].map((g) => el('option', { value: g, selected: g === 'day' }, g)));
    const from = el('input', { id: 'usage-from', type: 'date', value: day(new Date(Date.now() - 29 * 86400000)) });
    const to = el('input', { id: 'usage-to', type: 'date' });
    const out = el('div', { id: 'usage-table' });
    const dead = el('div', { id: 'dead-letter-list' });
    const query = () => {
      const p = new URLSearchParams({ group: group.value });
      if (account.value) p.set('account', account.value);
      if (keyInput.value.trim()) p.set('key', keyInput.value.trim());
      if (model.value.trim()) p.set('model', model.value.trim());
      if (from.value) p.set('from', from.value + 'T00:00:00Z');
      if (to.value) p.set('to', to.value + 'T00:00:00Z');
      return p.toString();
    };
    async function refresh() {
      const u = await api('/admin/usage?' + query());
      const t = u.totals;
      out.replaceChildren(u.data.length ? el('table', {},
        el('thead', {}, el('tr', {}, ['Period', 'Account', 'Key', 'Model'].map((h) => el('th', {}, h)),
          ['Requests', 'Cache hit', 'Cache miss', 'Output', 'Cost'].map((h) => el('th', { class: 'num' }, h)))),
        el('tbody', {}, u.data.map((r) => el('tr', {}, el('td', {}, r.period.substring(0, 16).replace('T', ' ')), el('td', {}, r.account_id),
          el('td', {}, r.api_key_id), el('td', {}, r.model), el('td', { class: 'num' }, int(r.requests)),
          el('td', { class: 'num' }, int(r.prompt_cache_hit_tokens)), el('td', { class: 'num' }, int(r.prompt_cache_miss_tokens)),
          el('td', { class: 'num' }, int(r.completion_tokens)), el('td', { class: 'num' }, r.cost)))),
        el('tfoot', {}, el('tr', {}, el('td', { colspan: 4 }, 'Total (from the ledger)'), el('td', { class: 'num' }, int(t.requests)),
          el('td', { class: 'num' }, int(t.prompt_cache_hit_tokens)), el('td', { class: 'num' }, int(t.prompt_cache_miss_tokens)),
          el('td', { class: 'num' }, int(t.completion_tokens)), el('td', { class: 'num', id: 'usage-total-cost' }, t.cost))))
        : el('p', { class: 'muted' }, 'No usage for these filters.'));
      // usage records billing could not apply: set aside, never dropped, for an operator to look at
      const dl = await api('/admin/usage/dead-letters?limit=50');
      dead.replaceChildren(el('h2', {}, 'Dead-lettered usage ', el('span', { class: dl.total ? 'badge revoked' : 'badge', id: 'dead-count' }, String(dl.total))),
        dl.data.length ? el('table', { id: 'dead-letters' },
          el('thead', {}, el('tr', {}, ['Received', 'Event', 'Account', 'Reason', 'Bytes', 'Resolution'].map((h) => el('th', {}, h)))),
          el('tbody', {}, dl.data.map((d) => el('tr', {}, el('td', {}, d.received_at.substring(0, 19).replace('T', ' ')),
            el('td', {}, el('code', {}, d.event_id || '–')), el('td', {}, d.account_id || '–'), el('td', { class: 'reason' }, d.reason),
            el('td', { class: 'num' }, int(d.bytes)),
            // replayed or written off through POST /admin/usage/dead-letters/{id}/replay | write-off
            el('td', {}, d.resolution ? d.resolution.replace('_', ' ') + (d.written_off ? ' ' + d.written_off : '') : 'open')))))
          : el('p', { class: 'muted' }, 'None: every usage record was applied.'));
    }
    async function csv() {
      const text = await api('/admin/usage.csv?' + query());
      const a = el('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })), download: 'usage-' + group.value + '.csv' });
      document.body.append(a);
      a.click();
      a.remove();
    }
    main.replaceChildren(el('h1', {}, 'Usage'),
      el('div', { class: 'card' }, el('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); refresh(); } },
        el('label', {}, 'Account', account), el('label', {}, 'Key', keyInput), el('label', {}, 'Model', model), el('label', {}, 'Group by', group),
        el('label', {}, 'From', from), el('label', {}, 'To (exclusive)', to),
        el('button', { class: 'primary', type: 'submit', id: 'usage-apply' }, 'Apply'),
        el('button', { class: 'secondary', type: 'button', id: 'usage-csv', onclick: csv }, 'Download CSV'))),
      el('div', { class: 'card' }, out),
      el('div', { class: 'card' }, dead));
    refresh();
  }

  async function balances() {
    state.accounts = (await api('/admin/accounts')).data;
    const newName = el('input', { id: 'account-name', placeholder: 'team name', required: true });
    const target = accountSelect('credit-account', false);
    const kind = el('select', { id: 'credit-kind' }, el('option', { value: 'top-ups' }, 'Top-up'), el('option', { value: 'grants' }, 'Grant (spent first)'));
    const amount = el('input', { id: 'credit-amount', placeholder: '10.00', inputmode: 'decimal', required: true });
    main.replaceChildren(el('h1', {}, 'Balances'),
      el('div', { class: 'card' }, el('table', { id: 'accounts' },
        el('thead', {}, el('tr', {}, el('th', {}, 'Account'), el('th', {}, 'Id'),
          ['Total', 'Granted', 'Topped up', 'Reserved', 'Available'].map((h) => el('th', { class: 'num' }, h)))),
        el('tbody', {}, state.accounts.map((a) => el('tr', { 'data-account': a.id }, el('td', {}, a.name), el('td', {}, el('code', {}, a.id)),
          [a.total_balance, a.granted_balance, a.topped_up_balance, a.reserved, a.available].map((v) => el('td', { class: 'num' }, v + ' ' + a.currency))))))),
      el('div', { class: 'card' }, el('h2', {}, 'Add funds'), el('form', {
        class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api('/admin/accounts/' + target.value + '/' + kind.value, { method: 'POST', body: JSON.stringify({ amount: amount.value.trim() }) });
            toast('Added ' + amount.value);
            balances();
          } catch (err) {
            toast(err.message);
          }
        }
      }, el('label', {}, 'Account', target), el('label', {}, 'Kind', kind), el('label', {}, 'Amount', amount),
        el('button', { class: 'primary', type: 'submit', id: 'credit-submit' }, 'Add'))),
      el('div', { class: 'card' }, el('h2', {}, 'New account'), el('form', {
        class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          await api('/admin/accounts', { method: 'POST', body: JSON.stringify({ name: newName.value.trim() }) });
          toast('Account created');
          balances();
        }
      }, el('label', {}, 'Name', newName), el('button', { class: 'primary', type: 'submit', id: 'account-create' }, 'Create account'))));
  }

  const pages = { overview, keys, usage, balances };

  function route() {
    if (!key()) {
      login();
      return;
    }
    nav.hidden = false;
    const page = (location.hash.replace('#/', '') || 'overview');
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
    (pages[page] || overview)().catch((err) => {
      if (err.message !== 'signed out') main.replaceChildren(el('div', { class: 'card error' }, err.message));
    });
  }

  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem('deepserve.admin');
    location.hash = '';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
})();
