// Pure helpers of the page's input side, apart from the DOM so Node can test them
// (tests/page/keys.test.mjs): what a key of the extra-keys bar sends or does, what the compose
// bar sends for a line of text, the OSC 52 clipboard payload, and which session names the
// server takes (SPEC 3: `[A-Za-z0-9_-]{1,64}`).
(function (ns) {
  'use strict';

  const ARROWS = { up: 'A', down: 'B', right: 'C', left: 'D' };
  // VT220 editing keys, as xterm sends them (Home/End follow the cursor-key mode).
  const TILDE = { pgup: '5', pgdn: '6' };
  const HOME_END = { home: 'H', end: 'F' };
  // What a paging key does to the scrollback when no full-screen program is running.
  const SCROLL = { pgup: 'page_up', pgdn: 'page_down', home: 'top', end: 'bottom' };
  // Base64 of a megabyte of text: a program cannot make the page hold more than that.
  const OSC52_MAX = 4 * 1024 * 1024 / 3 | 0;

  function ctrlOf(ch) {
    if (ch.length !== 1) return null;
    const c = ch.toUpperCase().charCodeAt(0);
    if (c >= 64 && c <= 95) return String.fromCharCode(c & 0x1f);
    if (ch === ' ' || ch === '2') return '\x00';
    if (ch === '?' || ch === '8') return '\x7f';
    return null;
  }

  // One key's worth of input with the sticky modifiers applied: Ctrl makes a control
  // character where one exists, Alt prefixes ESC.
  function modified(seq, mods) {
    let s = seq;
    if (mods.ctrl) {
      const c = ctrlOf(s);
      if (c !== null) s = c;
    }
    if (mods.alt) s = '\x1b' + s;
    return s;
  }

  // What a key of the bar does. `mods` {ctrl, alt} are the armed sticky modifiers; `term`
  // {appCursor, alternate} the terminal's cursor-key mode and whether a full-screen program
  // has the alternate screen. Returns {send: STRING} for bytes to the PTY, {scroll: WHAT} for
  // the page to scroll its own scrollback, {toggle: 'ctrl'|'alt'}, or null.
  // Paging keys go to the program on the alternate screen (less, vim, htop page themselves);
  // at a shell prompt they scroll the scrollback, which is what a phone cannot reach otherwise.
  function keyAction(key, mods, term) {
    if (key === 'ctrl' || key === 'alt') return { toggle: key };
    const mod = 1 + (mods.alt ? 2 : 0) + (mods.ctrl ? 4 : 0);
    if (key === 'esc') return { send: modified('\x1b', { alt: mods.alt }) };
    if (key === 'tab') return { send: modified('\t', { alt: mods.alt }) };
    if (ARROWS[key]) {
      // xterm's modifier encoding: 1 + (Alt 2) + (Ctrl 4).
      if (mod > 1) return { send: '\x1b[1;' + mod + ARROWS[key] };
      return { send: (term.appCursor ? '\x1bO' : '\x1b[') + ARROWS[key] };
    }
    if (TILDE[key] || HOME_END[key]) {
      if (!term.alternate) return { scroll: SCROLL[key] };
      if (TILDE[key]) return { send: '\x1b[' + TILDE[key] + (mod > 1 ? ';' + mod : '') + '~' };
      if (mod > 1) return { send: '\x1b[1;' + mod + HOME_END[key] };
      return { send: (term.appCursor ? '\x1bO' : '\x1b[') + HOME_END[key] };
    }
    return null;
  }

  // What the compose bar sends for `text` when its Enter is pressed. A single character with a
  // modifier armed is a key press (Ctrl, then "c" is ^C, with no Enter after it); anything else
  // is a line: the text (Alt prefixes ESC to its first character) and a carriage return.
  // Line breaks inside (a pasted block, dictation) become carriage returns, as typed Enter.
  function composeBytes(text, mods) {
    const chars = Array.from(text);
    if ((mods.ctrl || mods.alt) && chars.length === 1) return modified(chars[0], mods);
    const body = text.replace(/\r\n|\n/g, '\r');
    return (mods.alt && body ? '\x1b' : '') + body + '\r';
  }

  // The text of an OSC 52 "set clipboard" (`Pc;Pd` after `ESC ] 52;`), or null: for a query
  // (`?`, which the page never answers: the clipboard is not the program's to read), a clear
  // (empty data, which is not worth overwriting the user's clipboard), bad base64, or a payload
  // over the cap. Selection targets are those xterm knows (c p q s 0-7, empty = s 0).
  function osc52Text(data) {
    const semi = data.indexOf(';');
    if (semi < 0) return null;
    const targets = data.slice(0, semi);
    const payload = data.slice(semi + 1);
    if (!/^[cpqs0-7]*$/.test(targets) || payload === '' || payload === '?') return null;
    if (payload.length > OSC52_MAX) return null;
    const clean = payload.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) return null;
    let bin;
    try { bin = atob(clean); } catch (_) { return null; }
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder('utf-8').decode(bytes);
  }

  function validName(name) {
    return typeof name === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(name);
  }

  // Only web links open from the terminal: a program's output must not make a click run
  // javascript: or open a local file.
  function safeLink(uri) {
    try {
      const u = new URL(uri);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  ns.keys = { ctrlOf, modified, keyAction, composeBytes, osc52Text, validName, safeLink, OSC52_MAX };
})(window.keepty = window.keepty || {});
