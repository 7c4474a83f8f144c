// Formatting shared by the terminal page and the admin page, on the keepty namespace (plain
// scripts under script-src 'self': no modules).
(function (ns) {
  'use strict';

  const UNITS = ['K', 'M', 'G', 'T', 'P', 'E'];

  // Must agree with human_bytes in src/api/admin.rs, character for character: the admin page and
  // the server's text table show the same sessions side by side, and tests/page/format.test.mjs
  // holds the server's outputs. BigInt because the server rounds in integers: n * 10 of a large
  // count is past what a double holds exactly, and a half-way case would round the other way.
  function bytes(n) {
    const v = typeof n === 'bigint' ? n : BigInt(Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);
    if (v < 1024n) return v.toString();
    for (let i = 0; i < UNITS.length; i++) {
      const size = 1n << BigInt(10 * (i + 1));
      const tenths = (v * 10n + size / 2n) / size;
      if (tenths < 100n) {
        return (tenths % 10n === 0n ? String(tenths / 10n) : tenths / 10n + '.' + tenths % 10n) + UNITS[i];
      }
      const whole = (v + size / 2n) / size;
      // 1023.6K rounds to 1024K, which reads better as 1.0M: let the next unit take it.
      if (whole < 1024n || i === UNITS.length - 1) return whole + UNITS[i];
    }
    return v.toString();
  }

  ns.format = { bytes };
})(window.keepty = window.keepty || {});
