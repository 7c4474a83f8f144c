// Loads the page's plain scripts (assets/*.js, written for a browser's global scope) into this
// Node realm with a stand-in `window`, and returns the keepty namespace they fill. The same
// realm, not a vm context, so deepStrictEqual sees the scripts' objects as plain objects.
import { readFileSync } from 'node:fs';
import { runInThisContext } from 'node:vm';

const ASSETS = new URL('../../assets/', import.meta.url);

export function load(...names) {
  const window = {};
  for (const name of names) {
    const file = new URL(name, ASSETS);
    const code = readFileSync(file, 'utf8');
    runInThisContext(`(function (window) {${code}\n})`, { filename: file.pathname })(window);
  }
  return window.keepty;
}
