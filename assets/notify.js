// keepty notifications: a browser notification when a session's program exits or rings the
// bell while nobody is attached to it. Opt-in with the menu's "Notify me" (the permission is
// asked on that click, as browsers require a gesture); the choice is kept in localStorage, so
// every tab of this browser on this server watches. Each tab polls api/sessions every 10 s
// (one small request, the list the menu shows anyway) only while the permission is granted,
// and a notification's tag names the session and the event, so several tabs showing the
// same event replace one another instead of stacking.
(function (ns) {
  'use strict';

  const KEY = 'keepty.notify';
  // The browser test polls faster through this hook; nothing else sets it.
  const EVERY_MS = Number(ns.notifyEveryMs) || 10000;

  // What changed between two polls, for sessions nobody is attached to: [{id, kind, text, tag}].
  // `known` maps id -> {state, bells} and is updated in place; a session seen for the first
  // time only sets its baseline, so opening a tab never replays old events.
  function changes(known, sessions) {
    const events = [];
    const seen = new Set();
    for (const s of sessions) {
      const id = String(s.id);
      seen.add(id);
      const now = { state: String(s.state), bells: Number(s.bells) || 0 };
      const before = known.get(id);
      known.set(id, now);
      if (!before || Number(s.clients) > 0) continue;
      const name = s.title ? String(s.title) + ' (' + id + ')' : id;
      if (before.state !== 'exited' && now.state === 'exited') {
        const how = s.exit_code === null || s.exit_code === undefined ? '' : ' with code ' + s.exit_code;
        events.push({ id, kind: 'exited', text: name + ': the program exited' + how, tag: 'keepty-exit-' + id });
      } else if (now.bells > before.bells) {
        events.push({ id, kind: 'bell', text: name + ' rang the bell', tag: 'keepty-bell-' + id + '-' + now.bells });
      }
    }
    for (const id of known.keys()) if (!seen.has(id)) known.delete(id);
    return events;
  }

  function stored() {
    try { return window.localStorage.getItem(KEY) === '1'; } catch (_) { return false; }
  }

  function permitted() {
    return typeof window.Notification === 'function' && window.Notification.permission === 'granted';
  }

  let hooks = null;
  let timer = null;
  const known = new Map();

  function show(ev) {
    const n = new window.Notification('keepty', { body: ev.text, tag: ev.tag });
    n.onclick = () => {
      window.focus();
      const u = new URL(window.location.href);
      u.searchParams.set('s', ev.id);
      window.location.href = u.href;
    };
  }

  function poll() {
    timer = null;
    if (!stored() || !permitted()) return;
    window.fetch(new URL('api/sessions', window.location.href), { headers: hooks.headers(), cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : null))
      .then((body) => {
        if (body && Array.isArray(body.sessions)) changes(known, body.sessions).forEach(show);
      })
      .catch(() => {})
      .then(schedule);
  }

  function schedule() {
    if (timer === null && stored() && permitted()) timer = setTimeout(poll, EVERY_MS);
  }

  function label(button) {
    if (!button) return;
    const on = stored() && permitted();
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
    button.textContent = on ? 'Notifying' : 'Notify me';
  }

  // The page calls this once; `h.headers()` gives the request headers with the token.
  function start(h) {
    hooks = h;
    const button = document.querySelector('[data-menu="notify"]');
    if (typeof window.Notification !== 'function') {
      if (button) button.hidden = true;
      return;
    }
    label(button);
    if (button) {
      button.addEventListener('click', () => {
        if (stored() && permitted()) {
          window.localStorage.setItem(KEY, '0');
          label(button);
          return;
        }
        window.Notification.requestPermission().then((p) => {
          if (p === 'granted') window.localStorage.setItem(KEY, '1');
          label(button);
          poll();
        });
      });
    }
    // Another tab switched it on or off.
    window.addEventListener('storage', (e) => {
      if (e.key !== KEY) return;
      label(button);
      poll();
    });
    poll();
  }

  ns.notify = { start, changes };
})(window.keepty = window.keepty || {});
