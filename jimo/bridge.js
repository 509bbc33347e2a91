/*
 * bridge.js: the bridge's companion script for Jimo, served at /jimo/bridge.js.
 *
 * Load it with <script src="https://BRIDGE/jimo/bridge.js"></script>, before or
 * after the Jimo snippet. It reports to the bridge it was loaded from every
 * session reset and identify the page gives Jimo, so the bridge can tie Jimo's
 * user to Segment's. It never changes what Jimo receives: every command pushed
 * to window.jimo reaches Jimo as it was, in order; only a reset's or identify's
 * callback is wrapped in a function that calls it with the same arguments.
 *
 * Observed:   ['do','session:reset',[token, cb]]  ['do','identify',[userId, cb]]
 *             ['set','user:id',[id]]  ['set','user:email',[email]]
 *             ['set','user:name',[name]]  ['set','user:attributes',[object, ...]]
 *             window.JIMO_SESSION_TOKEN at load (legacy; reported once)
 * A reset or identify with a token starts a report; the set commands pushed
 * until it is sent (inside the callback, or up to 300 ms after it returns) are
 * added to it. The report is sent 300 ms after Jimo calls the callback, or after
 * 3 s if Jimo never does (Jimo not loaded). A set user:id that differs from the
 * token (legacy session:reset flows) is sent as userId: the bridge keeps the
 * token as a legacy Jimo token of that user.
 * A reset with a null or empty token is a logout, reported at once.
 *
 * API:
 *   jimoBridge.identify(userId, signature, options) -> Promise | undefined
 *     Asks the bridge for the Jimo token of userId (signature = the hex
 *     HMAC-SHA256 of userId your backend computes with the bridge's signing
 *     secret), then pushes ['do','identify',[jimoToken, cb]] to Jimo and sets
 *     options.email, options.name and options.attributes in the callback.
 *     options.impersonating = true reports a support session: the bridge stores
 *     it, links nothing, and returns no token, so Jimo is not identified.
 *     With options.callback(error, {userId, jimoToken}) it returns undefined;
 *     otherwise it returns a Promise (where Promise exists) of the same result.
 *     Required in derived token mode; works in shared mode too.
 *   jimoBridge.reset() logs out: reports it, then pushes
 *     ['do','session:reset',[null]] to Jimo.
 *   jimoBridge.impersonating = true marks the reports of observed commands.
 *
 * Everything the bridge does is guarded: an error of the bridge's, or a bridge
 * that cannot be reached, only writes a warning to the console.
 */
(function (window, document) {
  'use strict';
  if (!window || (window.jimoBridge && window.jimoBridge.loaded)) {
    return;
  }

  var SESSION_PATH = '/jimo/session';
  var CALLBACK_WINDOW_MS = 300; // set commands are collected this long after the callback returns
  var FALLBACK_MS = 3000; // report even if Jimo never calls the callback
  var LEGACY_WINDOW_MS = 1000; // set commands collected after a legacy JIMO_SESSION_TOKEN
  var SEEN_MAX = 500; // commands remembered, so a replay by Jimo's SDK is not reported twice
  var WATCH_MS = 1000; // how often, and
  var WATCH_TIMES = 30; // how many times, the wrapping is checked (in case it was undone)

  var origin = window.JIMO_BRIDGE_ORIGIN || scriptOrigin();
  var seen = [];
  var pending = null; // the report being collected
  var ownTokens = []; // Jimo tokens the bridge handed out; their identify is not reported again
  var api = {
    loaded: true,
    origin: origin,
    impersonating: !!(window.jimoBridge && window.jimoBridge.impersonating),
    identify: identify,
    reset: reset
  };
  window.jimoBridge = api;

  function warn(text) {
    try {
      if (window.console && window.console.warn) {
        window.console.warn('[jimo-bridge] ' + text);
      }
    } catch (e) { /* nothing to do */ }
  }

  function isArray(v) {
    return Object.prototype.toString.call(v) === '[object Array]';
  }

  function scriptOrigin() {
    var src = '';
    try {
      var current = document && document.currentScript;
      if (current && current.src) {
        src = current.src;
      } else if (document) {
        var scripts = document.getElementsByTagName('script');
        for (var i = scripts.length - 1; i >= 0; i--) {
          if (scripts[i].src && scripts[i].src.indexOf('/jimo/bridge.js') !== -1) {
            src = scripts[i].src;
            break;
          }
        }
      }
    } catch (e) { /* fall back to the page's origin */ }
    var m = /^(https?:\/\/[^\/?#]+)/i.exec(src);
    return m ? m[1] : '';
  }

  // ---- identity of the browser ----

  function unquote(v) {
    v = String(v);
    if (v.length >= 2 && v.charAt(0) === '"' && v.charAt(v.length - 1) === '"') {
      try {
        var parsed = JSON.parse(v);
        if (typeof parsed === 'string') {
          return parsed;
        }
      } catch (e) { /* not JSON: strip the quotes */ }
      return v.slice(1, -1);
    }
    return v;
  }

  function anonymousId() {
    try {
      var a = window.analytics;
      if (a && typeof a.user === 'function') {
        var u = a.user();
        if (u && typeof u.anonymousId === 'function') {
          var fromAnalytics = u.anonymousId();
          if (fromAnalytics) {
            return String(fromAnalytics);
          }
        }
      }
    } catch (e) { /* analytics.js not ready */ }
    try {
      var m = /(?:^|;\s*)ajs_anonymous_id=([^;]*)/.exec(document.cookie);
      if (m && m[1]) {
        var fromCookie = unquote(decodeURIComponent(m[1]));
        if (fromCookie) {
          return fromCookie;
        }
      }
    } catch (e) { /* no cookies */ }
    try {
      var stored = window.localStorage && window.localStorage.getItem('ajs_anonymous_id');
      if (stored) {
        return unquote(stored);
      }
    } catch (e) { /* no storage */ }
    return '';
  }

  function randomId() {
    var hex = '';
    try {
      var c = window.crypto || window.msCrypto;
      if (c && c.getRandomValues) {
        var bytes = new Uint8Array(16);
        c.getRandomValues(bytes);
        for (var i = 0; i < bytes.length; i++) {
          hex += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
        }
        return 'jb-' + hex;
      }
    } catch (e) { /* fall back to Math.random */ }
    for (var j = 0; j < 4; j++) {
      hex += Math.floor(Math.random() * 0x100000000).toString(16);
    }
    return 'jb-' + hex;
  }

  // ---- talking to the bridge ----

  // post sends body to the bridge; done(status, data) gets the HTTP status
  // (0 when the bridge could not be reached) and the parsed answer.
  function post(body, done) {
    var finished = false;
    function finish(status, data) {
      if (finished) {
        return;
      }
      finished = true;
      if (status && (status < 200 || status >= 300)) {
        warn('the bridge refused a session report (' + status + '): ' + ((data && data.message) || 'no details'));
      } else if (!status) {
        warn('the bridge at ' + (origin || 'this origin') + ' could not be reached');
      }
      if (done) {
        try {
          done(status, data);
        } catch (e) {
          warn('callback failed: ' + e);
        }
      }
    }
    try {
      var url = origin + SESSION_PATH;
      var json = JSON.stringify(body);
      if (typeof window.fetch === 'function') {
        window.fetch(url, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: json,
          keepalive: true,
          mode: 'cors',
          credentials: 'omit'
        }).then(function (res) {
          return res.json().then(function (data) {
            finish(res.status, data);
          }, function () {
            finish(res.status, null);
          });
        }, function () {
          finish(0, null);
        });
        return;
      }
      if (typeof window.XMLHttpRequest === 'function' || typeof window.XMLHttpRequest === 'object') {
        var xhr = new window.XMLHttpRequest();
        xhr.open('POST', url, true);
        xhr.withCredentials = false;
        xhr.setRequestHeader('Content-Type', 'application/json');
        xhr.onreadystatechange = function () {
          if (xhr.readyState !== 4) {
            return;
          }
          var data = null;
          try {
            data = JSON.parse(xhr.responseText);
          } catch (e) { /* not JSON */ }
          finish(xhr.status, data);
        };
        xhr.send(json);
        return;
      }
      if (window.navigator && typeof window.navigator.sendBeacon === 'function') {
        // text/plain needs no preflight; the bridge reads the body as JSON regardless.
        window.navigator.sendBeacon(url, json);
        finished = true; // no answer to read
        if (done) {
          done(0, null);
        }
        return;
      }
      finish(0, null);
    } catch (e) {
      warn('could not send a session report: ' + e);
      finish(0, null);
    }
  }

  // ---- reports of observed commands ----

  function begin(fields, waitMs) {
    if (pending) {
      flush(pending);
    }
    var p = {
      token: fields.token || '',
      userId: fields.userId || '',
      signature: fields.signature || '',
      followUp: !!fields.followUp,
      collected: false,
      email: '',
      name: '',
      attributes: null,
      sent: false,
      timer: null
    };
    pending = p;
    schedule(p, waitMs || FALLBACK_MS);
    return p;
  }

  function schedule(p, ms) {
    if (p.timer) {
      clearTimeout(p.timer);
    }
    p.timer = setTimeout(function () {
      flush(p);
    }, ms);
  }

  function flush(p) {
    if (p.sent) {
      return;
    }
    p.sent = true;
    if (p.timer) {
      clearTimeout(p.timer);
      p.timer = null;
    }
    if (pending === p) {
      pending = null;
    }
    if (p.followUp && !p.collected) {
      return; // the report was sent already; nothing new to add
    }
    var body = { token: p.token, messageId: randomId() };
    if (p.userId && p.userId !== p.token) {
      body.userId = p.userId;
    }
    if (p.signature) {
      body.signature = p.signature;
    }
    var anon = anonymousId();
    if (anon) {
      body.anonymousId = anon;
    }
    if (p.email) {
      body.email = p.email;
    }
    if (p.name) {
      body.name = p.name;
    }
    if (p.attributes) {
      body.attributes = p.attributes;
    }
    if (api.impersonating) {
      body.impersonating = true;
    }
    post(body, null);
  }

  function collect(name, args) {
    var p = pending;
    if (!p || !isArray(args)) {
      return;
    }
    var v = args[0];
    if (name === 'user:id') {
      if (v !== null && v !== undefined && v !== '') {
        p.userId = String(v);
        p.collected = true;
      }
    } else if (name === 'user:email') {
      p.email = v === null || v === undefined ? '' : String(v);
      p.collected = true;
    } else if (name === 'user:name') {
      p.name = v === null || v === undefined ? '' : String(v);
      p.collected = true;
    } else if (name === 'user:attributes' && v && typeof v === 'object' && !isArray(v)) {
      p.attributes = p.attributes || {};
      for (var k in v) {
        if (Object.prototype.hasOwnProperty.call(v, k)) {
          p.attributes[k] = v[k];
        }
      }
      p.collected = true;
    }
  }

  // wrapCallback returns a function that calls cb as Jimo would have, and
  // sends the report shortly after it returns.
  function wrapCallback(cb, p) {
    return function () {
      var q = p;
      try {
        if (q.sent) {
          // Jimo called back after the fallback sent the report: what the
          // callback sets goes into a follow-up report.
          q = begin({ token: p.token, userId: p.userId, signature: p.signature, followUp: true });
        }
      } catch (e) { /* report nothing */ }
      try {
        return cb.apply(this, arguments);
      } finally {
        try {
          if (!q.sent) {
            schedule(q, CALLBACK_WINDOW_MS);
          }
        } catch (e) { /* report nothing */ }
      }
    };
  }

  function rememberSeen(cmd) {
    seen.push(cmd);
    if (seen.length > SEEN_MAX) {
      seen.shift();
    }
  }

  function wasSeen(cmd) {
    for (var i = seen.length - 1; i >= 0; i--) {
      if (seen[i] === cmd) {
        return true;
      }
    }
    return false;
  }

  function ownToken(token) {
    for (var i = 0; i < ownTokens.length; i++) {
      if (ownTokens[i] === token) {
        return true;
      }
    }
    return false;
  }

  // observe looks at one command on its way to Jimo and returns the command
  // to pass on: cmd itself, or a copy whose callback is wrapped. inPlace
  // wraps the callback inside cmd instead (commands already in the buffer).
  function observe(cmd, inPlace) {
    if (!cmd || typeof cmd !== 'object' || wasSeen(cmd)) {
      return cmd;
    }
    rememberSeen(cmd);
    if (!isArray(cmd) || cmd.length < 2) {
      return cmd;
    }
    var verb = cmd[0];
    var name = cmd[1];
    var args = isArray(cmd[2]) ? cmd[2] : [];
    if (verb === 'set') {
      collect(name, args);
      return cmd;
    }
    if (verb !== 'do' || (name !== 'session:reset' && name !== 'identify')) {
      return cmd;
    }
    var token = args[0];
    if (token === null || token === undefined || token === '') {
      if (name === 'session:reset') {
        if (pending) {
          flush(pending);
        }
        reportLogout();
      }
      return cmd;
    }
    token = String(token);
    if (ownToken(token)) {
      return cmd;
    }
    var p = begin({ token: token });
    var cb = args[1];
    if (typeof cb !== 'function') {
      return cmd;
    }
    if (inPlace) {
      args[1] = wrapCallback(cb, p);
      return cmd;
    }
    var newArgs = args.slice();
    newArgs[1] = wrapCallback(cb, p);
    var copy = cmd.slice();
    copy[2] = newArgs;
    rememberSeen(copy);
    return copy;
  }

  function reportLogout(done) {
    var body = { token: null, messageId: randomId() };
    var anon = anonymousId();
    if (anon) {
      body.anonymousId = anon;
    }
    post(body, done || null);
  }

  // ---- wrapping window.jimo ----

  function isOurs(fn) {
    return !!(fn && fn.jimoBridge === true);
  }

  // wrapQueue makes q.push (the buffering array's or Jimo's own) pass every
  // command through observe. push stays an accessor, so a push that Jimo's SDK
  // installs later on the same object is wrapped too.
  function wrapQueue(q) {
    if (!q || (typeof q !== 'object' && typeof q !== 'function')) {
      return;
    }
    try {
      var d = Object.getOwnPropertyDescriptor(q, 'push');
      if (d && isOurs(d.get)) {
        return;
      }
      var original = q.push;
      if (typeof original !== 'function') {
        return;
      }
      var wrapper = function () {
        var cmds = [];
        for (var i = 0; i < arguments.length; i++) {
          var cmd = arguments[i];
          try {
            cmd = observe(cmd, false);
          } catch (e) {
            cmd = arguments[i];
            warn('could not observe a command: ' + e);
          }
          cmds[i] = cmd;
        }
        return original.apply(q, cmds);
      };
      var getter = function () {
        return wrapper;
      };
      getter.jimoBridge = true;
      Object.defineProperty(q, 'push', {
        configurable: true,
        enumerable: false,
        get: getter,
        set: function (fn) {
          original = fn;
        }
      });
    } catch (e) {
      return; // frozen or odd object: Jimo gets its commands, the bridge sees none
    }
    if (isArray(q)) {
      // Commands buffered before the bridge loaded have not reached Jimo yet.
      for (var j = 0; j < q.length; j++) {
        try {
          observe(q[j], true);
        } catch (e) { /* leave the command as it is */ }
      }
    }
  }

  function watchGlobal() {
    try {
      var d = Object.getOwnPropertyDescriptor(window, 'jimo');
      if (d && isOurs(d.get)) {
        return;
      }
      if (d && !d.configurable) {
        return;
      }
      var current = window.jimo;
      var getter = function () {
        return current;
      };
      getter.jimoBridge = true;
      Object.defineProperty(window, 'jimo', {
        configurable: true,
        enumerable: true,
        get: getter,
        set: function (v) {
          current = v;
          wrapQueue(v);
        }
      });
    } catch (e) { /* the periodic check still wraps a replaced window.jimo */ }
  }

  function ensureWrapped() {
    try {
      if (!window.jimo) {
        window.jimo = [];
      }
      watchGlobal();
      wrapQueue(window.jimo);
    } catch (e) {
      warn('could not watch window.jimo: ' + e);
    }
  }

  function pushToJimo(cmd) {
    rememberSeen(cmd);
    if (!window.jimo || typeof window.jimo.push !== 'function') {
      window.jimo = [];
    }
    window.jimo.push(cmd);
  }

  // ---- the public API ----

  function identify(userId, signature, options) {
    options = options || {};
    var callback = typeof options.callback === 'function' ? options.callback : null;
    var resolve = null;
    var reject = null;
    var promise;
    if (!callback && typeof window.Promise === 'function') {
      promise = new window.Promise(function (res, rej) {
        resolve = res;
        reject = rej;
      });
    }
    function settle(err, result) {
      try {
        if (callback) {
          callback(err, result);
        } else if (err && reject) {
          reject(err);
        } else if (resolve) {
          resolve(result);
        }
      } catch (e) {
        warn('identify callback failed: ' + e);
      }
    }
    if (userId === null || userId === undefined || userId === '') {
      settle(new Error('jimoBridge.identify needs a user ID'), null);
      return promise;
    }
    try {
      if (pending) {
        flush(pending);
      }
      var body = { userId: String(userId), signature: String(signature || ''), messageId: randomId() };
      var anon = anonymousId();
      if (anon) {
        body.anonymousId = anon;
      }
      if (options.email) {
        body.email = String(options.email);
      }
      if (options.name) {
        body.name = String(options.name);
      }
      if (options.attributes && typeof options.attributes === 'object') {
        body.attributes = options.attributes;
      }
      if (options.impersonating || api.impersonating) {
        body.impersonating = true;
      }
      post(body, function (status, data) {
        if (status < 200 || status >= 300 || !data) {
          settle(new Error((data && data.message) || 'the bridge did not answer (' + status + ')'), null);
          return;
        }
        var result = { userId: data.userId || '', jimoToken: data.jimoToken || '' };
        try {
          if (result.jimoToken) {
            ownTokens.push(result.jimoToken);
            pushToJimo(['do', 'identify', [result.jimoToken, function () {
              try {
                if (options.email) {
                  pushToJimo(['set', 'user:email', [String(options.email)]]);
                }
                if (options.name) {
                  pushToJimo(['set', 'user:name', [String(options.name)]]);
                }
                if (options.attributes && typeof options.attributes === 'object') {
                  pushToJimo(['set', 'user:attributes', [options.attributes]]);
                }
              } catch (e) {
                warn('could not set the user on Jimo: ' + e);
              }
            }]]);
          }
        } catch (e) {
          warn('could not identify the user to Jimo: ' + e);
        }
        settle(null, result);
      });
    } catch (e) {
      settle(e, null);
    }
    return promise;
  }

  function reset() {
    try {
      if (pending) {
        flush(pending);
      }
      reportLogout();
    } catch (e) {
      warn('could not report the logout: ' + e);
    }
    try {
      pushToJimo(['do', 'session:reset', [null]]);
    } catch (e) {
      warn('could not reset Jimo: ' + e);
    }
  }

  // ---- start ----

  try {
    // The legacy token was set before the snippet, so it comes before any buffered command.
    var legacy = window.JIMO_SESSION_TOKEN;
    if (legacy !== null && legacy !== undefined && legacy !== '') {
      begin({ token: String(legacy) }, LEGACY_WINDOW_MS);
    }
  } catch (e) { /* no legacy token */ }
  ensureWrapped();
  try {
    // A report still being collected is sent when the page goes away (fetch keepalive carries it).
    if (window.addEventListener) {
      window.addEventListener('pagehide', function () {
        try {
          if (pending) {
            flush(pending);
          }
        } catch (e) { /* nothing to do */ }
      });
    }
  } catch (e) { /* no events */ }
  try {
    var checks = 0;
    var watch = setInterval(function () {
      checks++;
      ensureWrapped();
      if (checks >= WATCH_TIMES) {
        clearInterval(watch);
      }
    }, WATCH_MS);
  } catch (e) { /* no timers */ }
})(typeof window !== 'undefined' ? window : null, typeof document !== 'undefined' ? document : null);
