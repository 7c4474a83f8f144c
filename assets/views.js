// The page's views over the terminal, for phones first: "Select text" (the screen and the
// scrollback as plain text the browser's own long-press selection works on, since xterm.js
// has no touch selection), the compose bar (a native text field, where autocorrect, IME
// composition, dictation and CJK input work as in any form, sent on Enter), and find in the
// scrollback. app.js hands each its terminal and the ways to send and copy.
(function (ns) {
  'use strict';

  const keys = ns.keys;

  // The buffer as logical lines: rows that xterm wrapped are joined again, so a copied long
  // command is one line. `from`..`to` are buffer rows. Returns {lines, rows}: rows[i] is the
  // first buffer row of lines[i].
  function bufferLines(term, from, to) {
    const b = term.buffer.active;
    const lines = [];
    const rows = [];
    for (let i = from; i < to; i++) {
      const line = b.getLine(i);
      if (!line) break;
      // Untrimmed: a wrapped row was full to its end, spaces included.
      const text = line.translateToString(false);
      if (line.isWrapped && lines.length) {
        lines[lines.length - 1] += text;
      } else {
        lines.push(text);
        rows.push(i);
      }
    }
    for (let i = 0; i < lines.length; i++) lines[i] = lines[i].replace(/ +$/, '');
    return { lines, rows };
  }

  function textOf(term, from, to) {
    return bufferLines(term, from, to).lines.join('\n').replace(/\n+$/, '');
  }

  // --- Select text ---------------------------------------------------------------------------

  // ctx: { term, copy(text, what), closed() }
  function selectView(ctx) {
    const root = document.getElementById('select-view');
    const pre = document.getElementById('select-text');
    const term = ctx.term;

    function open() {
      const b = term.buffer.active;
      pre.textContent = textOf(term, 0, b.length) + '\n';
      root.hidden = false;
      // Where the terminal was: its viewport's first line at the top.
      const { rows } = bufferLines(term, 0, b.viewportY + 1);
      const lineHeight = pre.scrollHeight / Math.max(1, pre.textContent.split('\n').length - 1);
      pre.scrollTop = Math.max(0, (rows.length - 1) * lineHeight);
    }

    function close() {
      root.hidden = true;
      pre.textContent = '';
      ctx.closed();
    }

    root.addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-select]');
      if (!btn) return;
      const b = term.buffer.active;
      switch (btn.dataset.select) {
        case 'copy': {
          const sel = String(window.getSelection());
          if (sel) ctx.copy(sel, 'selection');
          else ctx.note('long-press to select, then Copy');
          break;
        }
        case 'screen': ctx.copy(textOf(term, b.viewportY, b.viewportY + term.rows), 'screen'); break;
        case 'all': ctx.copy(textOf(term, 0, b.length), 'scrollback'); break;
        case 'close': close(); break;
        default: break;
      }
    });
    return { open, close, get isOpen() { return !root.hidden; } };
  }

  // --- compose bar ---------------------------------------------------------------------------

  // ctx: { mods(): {ctrl, alt}, release(), send(string), shown(on) }
  function composeBar(ctx) {
    const form = document.getElementById('compose');
    const input = document.getElementById('compose-input');
    // IME composition (CJK, Android keyboards' underlined word) ends with its own Enter,
    // which must not send the half-made text.
    let composing = false;
    input.addEventListener('compositionstart', () => { composing = true; });
    input.addEventListener('compositionend', () => { composing = false; });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (composing || e.isComposing || e.keyCode === 229)) e.preventDefault();
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (composing) return;
      ctx.send(keys.composeBytes(input.value, ctx.mods()));
      ctx.release();
      input.value = '';
    });

    function set(on) {
      form.hidden = !on;
      ctx.shown(on);
      if (on) input.focus();
    }
    return { set, input, get isOpen() { return !form.hidden; } };
  }

  // --- find ------------------------------------------------------------------------------------

  // ctx: { term, shown(on) }. Searches the logical lines (wrapped rows joined), case-blind
  // unless the query has a capital, from the last match (or the bottom) towards older or newer
  // lines, and selects and centres what it finds. A few hundred lines of JavaScript less than
  // xterm's search addon (22 KB gzip, a sixth of the page), which the 160 KB budget has no room
  // for; what it lacks (regular expressions, highlighting every match) a phone does not miss.
  function findBar(ctx) {
    const form = document.getElementById('search');
    const input = document.getElementById('search-input');
    const note = document.getElementById('search-note');
    const term = ctx.term;
    // The last match: buffer row of its logical line and index in it.
    let at = null;

    function find(older) {
      const q = input.value;
      note.textContent = '';
      if (!q) return false;
      const fold = q === q.toLowerCase();
      const needle = fold ? q.toLowerCase() : q;
      const b = term.buffer.active;
      const { lines, rows } = bufferLines(term, 0, b.length);
      const n = lines.length;
      // From the last match, else from the bottom (older) or the top (newer).
      let start = at ? rows.indexOf(at.row) : -1;
      const from = start >= 0 ? at : null;
      if (start < 0) start = older ? n - 1 : 0;
      for (let k = 0; k < n; k++) {
        const li = older ? start - k : start + k;
        if (li < 0 || li >= n) break;
        const text = fold ? lines[li].toLowerCase() : lines[li];
        let idx;
        if (from && li === start) {
          idx = older ? (from.index > 0 ? text.lastIndexOf(needle, from.index - 1) : -1) : text.indexOf(needle, from.index + 1);
        } else {
          idx = older ? text.lastIndexOf(needle) : text.indexOf(needle);
        }
        if (idx >= 0) {
          at = { row: rows[li], index: idx };
          // Wrapped rows are term.cols cells each.
          const row = rows[li] + Math.floor(idx / term.cols);
          term.select(idx % term.cols, row, Array.from(q).length);
          term.scrollToLine(Math.max(0, row - (term.rows >> 1)));
          note.textContent = '';
          return true;
        }
      }
      note.textContent = at ? 'no more' : 'not found';
      return false;
    }

    form.addEventListener('submit', (e) => { e.preventDefault(); find(true); });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') set(false);
      else if (e.key === 'Enter' && e.shiftKey) { e.preventDefault(); find(false); }
    });
    input.addEventListener('input', () => { at = null; });
    form.addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-find]');
      if (!btn) return;
      if (btn.dataset.find === 'close') set(false);
      else find(btn.dataset.find === 'older');
    });

    function set(on) {
      form.hidden = !on;
      at = null;
      note.textContent = '';
      if (on) {
        input.focus();
        input.select();
      } else {
        term.clearSelection();
      }
      ctx.shown(on);
    }
    return { set, find, get isOpen() { return !form.hidden; } };
  }

  ns.views = { bufferLines, textOf, selectView, composeBar, findBar };
})(window.keepty = window.keepty || {});
