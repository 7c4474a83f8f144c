// A token handed over as a `#token=` link, and whose token this page uses.
//
// Any page on the web can send this browser to http://box:7700/#token=OTHER. Stored without a
// word, OTHER would make this browser's new sessions another user's, who could then watch
// them. So a link's token replaces a stored one only when the user says so, after being told
// whose each one is (`/api/whoami`, an extension); with no token stored there is nothing to
// replace and the link's token is taken. The current user is shown in the menu.
//
// The pure parts (fromHash, plan, question) are tested in Node (tests/page/token.test.mjs);
// take() and showUser() do the asking and the DOM through what app.js hands them.
(function (ns) {
  'use strict';

  // The token a `#token=...` fragment carries, or null (no fragment, empty, malformed).
  function fromHash(hash) {
    if (typeof hash !== 'string' || !hash.startsWith('#token=')) return null;
    let t;
    try { t = decodeURIComponent(hash.slice(7)); } catch (_) { return null; }
    t = t.trim();
    return t ? t : null;
  }

  // What to do with a link's token given the stored one:
  //   none: no token in the link; same: it is the stored one; store: nothing stored, take
  //   it; ask: it would replace another token, so the user decides.
  function plan(stored, incoming) {
    if (!incoming) return 'none';
    if (incoming === stored) return 'same';
    if (!stored) return 'store';
    return 'ask';
  }

  // The question put to the user; `null` names a token the server did not accept.
  function question(incomingUser, storedUser) {
    const who = (u) => (u ? 'user \u201c' + u + '\u201d' : 'a token the server does not accept');
    return 'This link carries a keepty token for ' + who(incomingUser) + '.\n\n'
      + 'This browser now uses the token of ' + who(storedUser) + '. '
      + 'Sessions you start with the link\u2019s token belong to its user, who can watch them.\n\n'
      + 'Replace the stored token with the link\u2019s?';
  }

  // The menu line naming the current user.
  function userText(user, hasToken) {
    if (user) return 'signed in as ' + user;
    return hasToken ? 'token not accepted' : 'no token';
  }

  // Takes the token of `hash`, asking first when it would replace another. `io`: get() and
  // set(token) of the stored token, whoami(token) -> Promise of the user name or null, and
  // confirm(text) -> boolean. Resolves to true when the stored token changed.
  async function take(hash, io) {
    const incoming = fromHash(hash);
    const stored = io.get();
    switch (plan(stored, incoming)) {
      case 'store':
        io.set(incoming);
        return true;
      case 'ask': {
        const [incomingUser, storedUser] = await Promise.all([io.whoami(incoming), io.whoami(stored)]);
        if (!io.confirm(question(incomingUser, storedUser))) return false;
        io.set(incoming);
        return true;
      }
      default:
        return false;
    }
  }

  // Shows `text` at the top of the menu (the element is made on first use, so the page's
  // markup needs no change).
  function showUser(doc, text) {
    let el = doc.getElementById('menu-user');
    if (!el) {
      const menu = doc.getElementById('menu');
      if (!menu) return;
      el = doc.createElement('div');
      el.id = 'menu-user';
      el.className = 'menu-heading';
      menu.prepend(el);
    }
    el.textContent = text;
  }

  ns.token = { fromHash, plan, question, userText, take, showUser };
})(window.keepty = window.keepty || {});
