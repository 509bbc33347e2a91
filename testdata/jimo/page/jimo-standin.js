/*
 * A stand-in for Jimo's SDK, for the bridge's browser test. It behaves like the
 * real one where the bridge depends on it: the page's snippet makes
 * window.jimo a buffering array; when this script loads it replaces the array
 * with an object whose push runs commands, and replays the buffered commands
 * through that push, in order. ['do','session:reset',[token, cb]] and
 * ['do','identify',[id, cb]] call cb asynchronously (with the SDK as this and
 * one result argument); ['set', name, [value]] commands are kept as the user's
 * state.
 *
 * For the test it records:
 *   window.__jimoReceived   every command received, in order, as plain data
 *                           (a function becomes the marker "[callback]")
 *   window.__jimoCallbacks  the names of the commands whose callbacks it ran
 *   window.__jimoState      the user state set by set commands
 */
(function (window) {
  'use strict';
  var CALLBACK = '[callback]';
  var received = (window.__jimoReceived = []);
  var callbacks = (window.__jimoCallbacks = []);
  var state = (window.__jimoState = {});

  function plain(v) {
    if (typeof v === 'function') {
      return CALLBACK;
    }
    if (Array.isArray(v)) {
      return v.map(plain);
    }
    if (v && typeof v === 'object') {
      var out = {};
      Object.keys(v).forEach(function (k) {
        out[k] = plain(v[k]);
      });
      return out;
    }
    return v;
  }

  var sdk = { loaded: true };

  function run(cmd) {
    received.push(plain(cmd));
    if (!Array.isArray(cmd)) {
      throw new Error('jimo stand-in: a command must be an array, got ' + typeof cmd);
    }
    var verb = cmd[0];
    var name = cmd[1];
    var args = Array.isArray(cmd[2]) ? cmd[2] : [];
    if (verb === 'set') {
      state[name] = args[0];
      return;
    }
    if (verb === 'do' && (name === 'session:reset' || name === 'identify')) {
      state.session = args[0] === undefined ? null : args[0];
      var cb = args[1];
      if (typeof cb === 'function') {
        setTimeout(function () {
          callbacks.push(name);
          cb.call(sdk, { ok: true, command: name });
        }, 5);
      }
    }
  }

  sdk.push = function () {
    for (var i = 0; i < arguments.length; i++) {
      run(arguments[i]);
    }
    return received.length;
  };

  var buffered = window.jimo;
  window.jimo = sdk;
  if (Array.isArray(buffered)) {
    for (var i = 0; i < buffered.length; i++) {
      window.jimo.push(buffered[i]);
    }
  }
})(window);
