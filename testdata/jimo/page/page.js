/*
 * The app's part of the browser test page: a legacy Jimo session reset with
 * set user:id in its callback, then the current identify with set user:email
 * in its callback, as a single-page app does them. window.__ids holds the
 * token, user ID and email; window.__pageLog records each callback the page
 * got, with its argument and whether `this` was Jimo's object.
 */
(function (window, document) {
  'use strict';
  var ids = window.__ids;
  var log = (window.__pageLog = []);

  function show() {
    var out = document.getElementById('out');
    if (out) {
      var lines = ['Jimo received:'];
      (window.__jimoReceived || []).forEach(function (cmd) {
        lines.push('  ' + JSON.stringify(cmd));
      });
      lines.push('Jimo ran the callbacks of: ' + JSON.stringify(window.__jimoCallbacks));
      lines.push('The page got:');
      log.forEach(function (entry) {
        lines.push('  ' + JSON.stringify(entry));
      });
      lines.push('bridge.js loaded: ' + !!(window.jimoBridge && window.jimoBridge.loaded));
      lines.push('cookie: ' + document.cookie);
      out.textContent = lines.join('\n');
    }
  }

  function identify() {
    window.jimo.push(['do', 'identify', [ids.userId, function (result) {
      log.push({ callback: 'identify', result: result, thisIsJimo: this === window.jimo });
      window.jimo.push(['set', 'user:email', [ids.email]]);
      show();
    }]]);
  }

  window.page = {
    start: function () {
      window.jimo.push(['do', 'session:reset', [ids.token, function (result) {
        log.push({ callback: 'session:reset', result: result, thisIsJimo: this === window.jimo });
        window.jimo.push(['set', 'user:id', [ids.userId]]);
        setTimeout(identify, 50);
      }]]);
    }
  };
})(window, document);
