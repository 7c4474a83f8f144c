// Files (issue 19): upload by XHR (fetch has no upload progress); download by a ticket and a
// navigation, so the browser streams to disk; offers from `keepty send`. Tests: tests/page/.
(function (ns) {
  'use strict';

  // With no DIR, NAME alone: the server takes it relative to the cwd.
  const joinPath = (dir, name) => (dir ? dir.replace(/\/+$/, '') + '/' + name : name);
  const baseName = (p) => String(p).replace(/\/+$/, '').split('/').pop() || String(p);
  const route = (s, what, path, over) => 'api/sessions/' + encodeURIComponent(s) + '/' + what
    + (path === undefined ? '' : '?path=' + encodeURIComponent(path) + (over ? '&overwrite=1' : ''));

  // The server's own words when it sent some, else what the status says.
  function errorText(status, body) {
    if (body && typeof body.message === 'string' && body.message) return body.message;
    if (!status) return 'the connection to the server was lost';
    if (status === 401) return 'a token is needed (Set token in the menu)';
    return 'the server answered ' + status;
  }

  const hasFiles = (dt) => !!dt && Array.from(dt.types || []).includes('Files');

  // ctx: { session() -> id or null, headers(), bytes(n), done() (focus back) }
  function install(ctx) {
    const $ = (id) => document.getElementById(id);
    const [bar, text, meter, go, shut, picker] = ['files', 'files-text', 'files-progress', 'files-go', 'files-x', 'file-input'].map($);
    const st = { xhr: null, go: null };
    const size = (n) => ctx.bytes(n) + 'B';

    function show(msg, label, fn, progress) {
      text.textContent = text.title = msg;
      bar.hidden = false;
      meter.hidden = progress === undefined;
      meter.value = progress || 0;
      go.hidden = !label;
      go.textContent = label || '';
      shut.textContent = progress !== undefined ? 'Cancel' : label ? 'Dismiss' : '\u2715';
      st.go = fn;
    }
    go.onclick = () => st.go && st.go();
    shut.onclick = () => (st.xhr ? st.xhr.abort() : ((bar.hidden = true), ctx.done()));
    // A click must not take the focus (and a phone's keyboard) from the terminal.
    for (const b of [go, shut]) b.onpointerdown = b.onmousedown = (e) => e.preventDefault();

    // `before(x)` runs before send: upload events fire only if listened to by then.
    function call(method, url, done, body, before) {
      const x = new XMLHttpRequest();
      x.open(method, new URL(url, location.href));
      const h = ctx.headers();
      for (const k in h) x.setRequestHeader(k, h[k]);
      x.onload = () => {
        let j = null;
        try { j = JSON.parse(x.responseText); } catch (_) { /* not JSON */ }
        done(x.status, j);
      };
      x.onerror = () => done(0, null);
      if (before) before(x);
      x.send(body);
      return x;
    }
    function session() {
      const s = ctx.session();
      if (!s) show('not attached to a session', '', null);
      return s;
    }
    function ask(s, question, name, then) {
      call('GET', route(s, 'cwd'), (status, j) => {
        const path = window.prompt(question, joinPath(status === 200 && j && j.cwd, name));
        ctx.done();
        if (path) then(path);
      });
    }

    function upload(file) {
      const s = session();
      // One at a time: the bar shows the one running.
      if (s && !st.xhr) ask(s, 'Upload ' + file.name + ' (' + size(file.size) + ') to:', file.name, (p) => put(s, file, p, false));
    }
    function put(s, file, path, over) {
      const name = baseName(path);
      show('uploading ' + name, '', null, 0);
      call('PUT', route(s, 'files', path, over), (status, j) => {
        st.xhr = null;
        if (status === 201) show('uploaded ' + ((j && j.path) || path) + ' (' + size(file.size) + ')', '', null);
        else if (status === 409 && j && j.error === 'exists' && !over && window.confirm(path + ' exists. Replace it?')) put(s, file, path, true);
        else show('upload of ' + name + ' failed: ' + (status === 409 && j && j.error === 'exists' ? path + ' exists' : errorText(status, j)), '', null);
      }, file, (x) => {
        st.xhr = x;
        x.upload.onprogress = (e) => e.lengthComputable && show('uploading ' + name + ': '
          + Math.floor((100 * e.loaded) / e.total) + '% of ' + size(e.total), '', null, e.loaded / e.total);
        x.onabort = () => { st.xhr = null; show('upload of ' + name + ' cancelled', '', null); };
      });
    }

    function download(path) {
      const s = session();
      if (!s) return;
      call('POST', route(s, 'files/ticket', path), (status, t) => {
        if (status !== 200 || !t || typeof t.url !== 'string') return show('download of ' + baseName(path) + ' failed: ' + errorText(status, t), '', null);
        const a = document.createElement('a');
        a.href = new URL(t.url, location.href).href;
        a.download = t.name || baseName(path);
        document.body.appendChild(a).click();
        a.remove();
        show('downloading ' + a.download + ' (' + size(t.size) + ')', '', null);
      });
    }

    picker.onchange = () => {
      const f = picker.files[0];
      picker.value = '';
      if (f) upload(f);
    };
    const term = $('term');
    term.addEventListener('dragover', (e) => { if (hasFiles(e.dataTransfer)) e.preventDefault(); });
    term.addEventListener('drop', (e) => {
      if (!hasFiles(e.dataTransfer)) return;
      e.preventDefault();
      if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
    });

    return {
      pick: () => picker.click(),
      askDownload: () => { const s = session(); if (s) ask(s, 'Download the file at:', '', download); },
      offer: (o) => o && typeof o.path === 'string' && o.path[0] === '/'
        && show('Download ' + baseName(o.path) + ' (' + size(o.size) + ')?', 'Download', () => download(o.path)),
      get text() { return bar.hidden ? '' : text.textContent; },
    };
  }

  ns.files = { joinPath, baseName, route, errorText, hasFiles, install };
})(window.keepty = window.keepty || {});
