// Runs jimo/bridge.js in a simulated page (node's vm, fake timers, a fake
// fetch and a fake Jimo SDK) and checks its contract. Usage:
//   node bridge_harness.js path/to/bridge.js
// Prints one line per scenario and "N passed, N failed"; exits 1 on a failure.
'use strict';
const fs = require('fs');
const vm = require('vm');
const assert = require('assert');

const source = fs.readFileSync(process.argv[2], 'utf8');
const UUID = '0f8fad5b-d9cb-469f-a165-70867728950e';

// page builds a fresh simulated page. opts: cookie, localStorage, analytics,
// fetch (function(url, init) -> {status, body} or a thrown error), noFetch.
function page(opts) {
  opts = opts || {};
  const timers = [];
  let now = 0;
  let nextId = 1;
  const requests = [];
  const warnings = [];
  const g = {
    console: { warn: (m) => warnings.push(String(m)), log: () => {} },
    setTimeout: (fn, ms) => { const id = nextId++; timers.push({ id, at: now + (ms || 0), fn }); return id; },
    clearTimeout: (id) => { const i = timers.findIndex((t) => t.id === id); if (i >= 0) timers.splice(i, 1); },
    setInterval: (fn, ms) => { const id = nextId++; timers.push({ id, at: now + ms, fn, every: ms }); return id; },
    clearInterval: (id) => { const i = timers.findIndex((t) => t.id === id); if (i >= 0) timers.splice(i, 1); },
    document: {
      currentScript: { src: 'https://bridge.example:8443/jimo/bridge.js?v=1' },
      cookie: opts.cookie || '',
      getElementsByTagName: () => [],
    },
    localStorage: { getItem: (k) => (opts.localStorage || {})[k] || null },
    crypto: { getRandomValues: (a) => { for (let i = 0; i < a.length; i++) a[i] = (i * 37 + requests.length) & 0xff; return a; } },
    Uint8Array,
  };
  if (opts.analytics) g.analytics = opts.analytics;
  if (!opts.noFetch) {
    g.fetch = (url, init) => {
      const req = { url, init, body: JSON.parse(init.body) };
      requests.push(req);
      const answer = opts.fetch ? opts.fetch(req) : { status: 200, body: { userId: '', jimoToken: '' } };
      if (answer instanceof Error) return Promise.reject(answer);
      return Promise.resolve({ status: answer.status, json: () => Promise.resolve(answer.body) });
    };
  }
  const ctx = vm.createContext(g);
  vm.runInContext('var window = this;', ctx);
  return {
    ctx,
    requests,
    warnings,
    run(code) { return vm.runInContext(code, ctx); },
    load() { vm.runInContext(source, ctx, { filename: 'bridge.js' }); },
    async advance(ms) {
      const until = now + ms;
      for (;;) {
        await settle();
        timers.sort((a, b) => a.at - b.at || a.id - b.id);
        const t = timers[0];
        if (!t || t.at > until) break;
        now = t.at;
        if (t.every) t.at += t.every; else timers.shift();
        t.fn();
      }
      now = until;
      await settle();
    },
  };
}

function settle() { return new Promise((r) => setImmediate(r)); }

// fakeSDK replaces window.jimo the way Jimo's SDK does: a new object whose
// push runs commands (calling do-callbacks synchronously), replaying the
// buffered array through its push.
const installSDK = `
  (function () {
    var buffered = window.jimo;
    var sdk = { processed: [], push: function () {
      for (var i = 0; i < arguments.length; i++) {
        var c = arguments[i];
        sdk.processed.push(c);
        if (c[0] === 'do' && c[2] && typeof c[2][1] === 'function') c[2][1]('from-jimo');
      }
      return sdk.processed.length;
    } };
    window.jimo = sdk;
    for (var i = 0; i < buffered.length; i++) window.jimo.push(buffered[i]);
    window.sdk = sdk;
  })();
`;

const scenarios = {
  async 'buffered identify, SDK replaces window.jimo and replays through push'() {
    const p = page({ cookie: 'other=1; ajs_anonymous_id=%22anon-from-cookie%22' });
    p.run(`window.jimo = []; window.cbArgs = [];
      window.jimo.push(['do', 'identify', ['${UUID}', function (a) { window.cbArgs.push(a); window.jimo.push(['set', 'user:email', ['ada@example.com']]); }]]);`);
    p.load();
    p.run(`window.jimo.push(['set', 'user:name', ['Ada']], ['do', 'boot']);`);
    await p.advance(100);
    assert.strictEqual(p.requests.length, 0, 'no report before Jimo calls back');
    p.run(installSDK);
    assert.deepStrictEqual(JSON.parse(p.run('JSON.stringify(window.cbArgs)')), ['from-jimo'], 'the original callback ran once with Jimo\'s arguments');
    const processed = JSON.parse(p.run('JSON.stringify(window.sdk.processed.map(function (c) { return c[0] + " " + c[1]; }))'));
    assert.deepStrictEqual(processed, ['do identify', 'set user:email', 'set user:name', 'do boot'], 'Jimo got every command, in order (the callback runs during the replay)');
    await p.advance(400);
    assert.strictEqual(p.requests.length, 1, 'one report');
    const r = p.requests[0];
    assert.strictEqual(r.url, 'https://bridge.example:8443/jimo/session');
    assert.strictEqual(r.init.method, 'POST');
    assert.strictEqual(r.init.keepalive, true);
    assert.strictEqual(r.init.mode, 'cors');
    assert.strictEqual(r.init.credentials, 'omit');
    assert.strictEqual(r.body.token, UUID);
    assert.strictEqual(r.body.anonymousId, 'anon-from-cookie');
    assert.strictEqual(r.body.email, 'ada@example.com');
    assert.strictEqual(r.body.name, 'Ada');
    assert.ok(/^jb-/.test(r.body.messageId), 'a messageId');
    assert.strictEqual(r.body.userId, undefined, 'no userId when it is the token');
    p.run(`window.jimo.push(['do', 'identify', ['7c9e6679-7425-40de-944b-e07fc1f90ae7', function () {}]]);`);
    await p.advance(400);
    assert.strictEqual(p.requests.length, 2, 'the replaced window.jimo is still observed');
  },

  async 'script loaded after the SDK; sets inside the callback are collected'() {
    const p = page({ analytics: { user: () => ({ anonymousId: () => 'anon-from-analytics' }) }, cookie: 'ajs_anonymous_id=cookie' });
    p.run('window.jimo = [];');
    p.run(installSDK);
    p.load();
    p.run(`window.jimo.push(['do', 'session:reset', ['${UUID}', function () {
      window.jimo.push(['set', 'user:id', ['app-user-9']]);
      window.jimo.push(['set', 'user:attributes', [{ plan: 'pro' }, false, true]]);
    }]]);`);
    await p.advance(50);
    p.run(`window.jimo.push(['set', 'user:attributes', [{ seats: 3 }]]);`);
    await p.advance(400);
    assert.strictEqual(p.requests.length, 1);
    const b = p.requests[0].body;
    assert.strictEqual(b.token, UUID);
    assert.strictEqual(b.userId, 'app-user-9', 'a differing set user:id is sent as userId');
    assert.deepStrictEqual(b.attributes, { plan: 'pro', seats: 3 });
    assert.strictEqual(b.anonymousId, 'anon-from-analytics');
    assert.strictEqual(p.run('window.sdk.processed.length'), 4);
  },

  async 'callback never called: the fallback timer reports'() {
    const p = page({ localStorage: { ajs_anonymous_id: '"anon-from-storage"' } });
    p.load();
    p.run(`window.jimo.push(['do', 'session:reset', ['${UUID}', function () {}]]);`);
    await p.advance(2900);
    assert.strictEqual(p.requests.length, 0);
    await p.advance(200);
    assert.strictEqual(p.requests.length, 1);
    assert.strictEqual(p.requests[0].body.anonymousId, 'anon-from-storage');
    assert.strictEqual(p.run('window.jimo.length'), 1, 'the command is still buffered for Jimo');
  },

  async 'late callback after the fallback sends a follow-up with what it sets'() {
    const p = page();
    p.load();
    p.run(`window.jimo.push(['do', 'identify', ['${UUID}', function () { window.jimo.push(['set', 'user:email', ['late@example.com']]); }]]);`);
    await p.advance(3100);
    assert.strictEqual(p.requests.length, 1);
    p.run(installSDK);
    await p.advance(400);
    assert.strictEqual(p.requests.length, 2);
    assert.strictEqual(p.requests[1].body.email, 'late@example.com');
    assert.strictEqual(p.requests[1].body.token, UUID);
  },

  async 'session:reset with null is a logout, reported at once'() {
    const p = page({ cookie: 'ajs_anonymous_id=anon-1' });
    p.load();
    p.run(`window.jimo.push(['do', 'session:reset', [null]]);`);
    await p.advance(0);
    assert.strictEqual(p.requests.length, 1);
    assert.strictEqual(p.requests[0].body.token, null);
    assert.strictEqual(p.requests[0].body.anonymousId, 'anon-1');
  },

  async 'jimoBridge.identify asks for the token and identifies Jimo with it'() {
    const p = page({ fetch: () => ({ status: 200, body: { userId: '42', jimoToken: 'derived-token-xyz' } }) });
    p.run('window.jimo = [];');
    p.run(installSDK);
    p.load();
    p.run(`window.result = null; window.jimoBridge.identify('42', 'abcd', { email: 'ada@example.com', attributes: { plan: 'pro' } }).then(function (r) { window.result = r; });`);
    await p.advance(0);
    assert.strictEqual(p.requests.length, 1);
    assert.deepStrictEqual(
      { userId: p.requests[0].body.userId, signature: p.requests[0].body.signature, email: p.requests[0].body.email },
      { userId: '42', signature: 'abcd', email: 'ada@example.com' });
    assert.deepStrictEqual(JSON.parse(p.run('JSON.stringify(window.result)')), { userId: '42', jimoToken: 'derived-token-xyz' });
    const processed = p.run('JSON.stringify(window.sdk.processed)');
    assert.deepStrictEqual(JSON.parse(processed), [['do', 'identify', ['derived-token-xyz', null]], ['set', 'user:email', ['ada@example.com']], ['set', 'user:attributes', [{ plan: 'pro' }]]]);
    await p.advance(5000);
    assert.strictEqual(p.requests.length, 1, 'the bridge\'s own identify is not reported again');
  },

  async 'jimoBridge.identify with a callback, refused by the bridge'() {
    const p = page({ fetch: () => ({ status: 401, body: { code: 'unauthorized', message: 'signature does not match' } }) });
    p.load();
    p.run(`window.err = null; window.ret = window.jimoBridge.identify('42', 'bad', { callback: function (e, r) { window.err = e && e.message; } });`);
    await p.advance(0);
    assert.strictEqual(p.run('window.ret'), undefined);
    assert.strictEqual(p.run('window.err'), 'signature does not match');
    assert.strictEqual(p.run('window.jimo.length'), 0, 'Jimo is not identified');
    assert.ok(p.warnings.some((w) => w.indexOf('401') !== -1), 'a console warning');
  },

  async 'jimoBridge.reset reports the logout and resets Jimo'() {
    const p = page();
    p.load();
    p.run('window.jimoBridge.reset();');
    await p.advance(0);
    assert.strictEqual(p.requests.length, 1);
    assert.strictEqual(p.requests[0].body.token, null);
    assert.deepStrictEqual(JSON.parse(p.run('JSON.stringify(window.jimo)')), [['do', 'session:reset', [null]]]);
    await p.advance(5000);
    assert.strictEqual(p.requests.length, 1, 'the reset is reported once');
  },

  async 'the bridge unreachable: commands still reach Jimo, nothing throws'() {
    const p = page({ fetch: () => new Error('network down') });
    p.run('window.jimo = [];');
    p.run(installSDK);
    p.load();
    p.run(`window.called = 0; window.jimo.push(['do', 'identify', ['${UUID}', function () { window.called++; }]]);`);
    await p.advance(4000);
    assert.strictEqual(p.run('window.called'), 1);
    assert.strictEqual(p.requests.length, 1);
    assert.ok(p.warnings.some((w) => w.indexOf('could not be reached') !== -1));
  },

  async 'no fetch: falls back to XMLHttpRequest'() {
    const p = page({ noFetch: true });
    p.run(`window.sent = []; window.XMLHttpRequest = function () {
      var x = this; x.open = function (m, u) { x.url = u; }; x.setRequestHeader = function () {};
      x.send = function (b) { window.sent.push({ url: x.url, body: b, credentials: x.withCredentials }); x.readyState = 4; x.status = 200; x.responseText = '{}'; x.onreadystatechange(); };
    };`);
    p.load();
    p.run(`window.jimo.push(['do', 'session:reset', ['${UUID}']]);`);
    await p.advance(3100);
    const sent = JSON.parse(p.run('JSON.stringify(window.sent)'));
    assert.strictEqual(sent.length, 1);
    assert.strictEqual(sent[0].url, 'https://bridge.example:8443/jimo/session');
    assert.strictEqual(sent[0].credentials, false);
    assert.strictEqual(JSON.parse(sent[0].body).token, UUID);
  },

  async 'legacy JIMO_SESSION_TOKEN is reported once'() {
    const p = page();
    p.run(`window.JIMO_SESSION_TOKEN = '${UUID}';`);
    p.load();
    await p.advance(1100);
    assert.strictEqual(p.requests.length, 1);
    assert.strictEqual(p.requests[0].body.token, UUID);
    p.load(); // loaded twice by mistake
    await p.advance(5000);
    assert.strictEqual(p.requests.length, 1);
  },

  async 'the SDK installing its own push on the buffer array is wrapped too'() {
    const p = page();
    p.load();
    p.run(`window.got = []; window.jimo.push = function (c) { window.got.push(c[1]); if (c[2] && c[2][1]) c[2][1](); return 1; };`);
    p.run(`window.jimo.push(['do', 'identify', ['${UUID}', function () {}]]);`);
    await p.advance(400);
    assert.deepStrictEqual(JSON.parse(p.run('JSON.stringify(window.got)')), ['identify']);
    assert.strictEqual(p.requests.length, 1);
  },

  async 'an Array is still an Array for Jimo'() {
    const p = page();
    p.load();
    p.run(`window.jimo.push(['do', 'boot'], ['set', 'user:name', ['x']]);`);
    assert.strictEqual(p.run('Array.isArray(window.jimo) && window.jimo.length'), 2);
    assert.strictEqual(p.run('Object.keys(window.jimo).join(",")'), '0,1', 'no enumerable additions');
  },
};

(async () => {
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of Object.entries(scenarios)) {
    try {
      await fn();
      passed++;
      console.log('ok   ' + name);
    } catch (e) {
      failed++;
      console.log('FAIL ' + name + '\n     ' + (e && e.stack ? e.stack.split("\n").slice(0, 12).join("\n     ") : e));
    }
  }
  console.log(passed + ' passed, ' + failed + ' failed');
  process.exit(failed ? 1 : 0);
})();
