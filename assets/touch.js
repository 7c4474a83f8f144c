// Finger scrolling of the terminal, with momentum. xterm.js 6.0.0 lost touch scrolling
// (xterm.js#5489; the fixes are only in the 6.1 betas), and a phone has no wheel and no
// scrollbar to drag. This owns one-finger vertical swipes on the terminal and leaves
// everything else (a tap that focuses, a long press, two fingers) to xterm and the browser.
// On the normal screen a swipe scrolls the scrollback; on the alternate screen (less, vim,
// htop: there is no scrollback) it sends arrow keys, as xterm does for a wheel there.
(function (ns) {
  'use strict';

  // Movement under this is a tap, not a swipe (a finger wobbles a few pixels).
  const SLOP_PX = 10;
  // Per-frame decay of the fling and the speed at which it stops, in px/ms.
  const FRICTION = 0.965;
  const STOP_SPEED = 0.02;
  // Only the last moves decide the fling's speed; an old, slow start must not damp it.
  const VELOCITY_WINDOW_MS = 100;
  // A long fling through a huge scrollback is still bounded.
  const MAX_FLING_MS = 3000;

  // opts: { lines(n): scroll by n lines (negative: back in time); lineHeight(): px }
  function install(el, opts) {
    const g = { id: null, y0: 0, x0: 0, y: 0, swiping: false, rest: 0, samples: [], raf: 0 };

    function stopFling() {
      if (g.raf) cancelAnimationFrame(g.raf);
      g.raf = 0;
    }

    // Moves the content by dy pixels (positive: the finger went down, so older lines show).
    function movePx(dy) {
      const h = Math.max(1, opts.lineHeight());
      g.rest += dy;
      const n = Math.trunc(g.rest / h);
      if (n !== 0) {
        g.rest -= n * h;
        opts.lines(-n);
      }
    }

    function touchOf(e) {
      for (const t of e.changedTouches) if (t.identifier === g.id) return t;
      return null;
    }

    el.addEventListener('touchstart', (e) => {
      stopFling();
      if (e.touches.length !== 1) {
        g.id = null;
        return;
      }
      const t = e.touches[0];
      Object.assign(g, { id: t.identifier, x0: t.clientX, y0: t.clientY, y: t.clientY, swiping: false, rest: 0 });
      g.samples = [[e.timeStamp, t.clientY]];
    }, { capture: true, passive: true });

    el.addEventListener('touchmove', (e) => {
      if (g.id === null) return;
      if (e.touches.length !== 1) {
        g.id = null;
        return;
      }
      const t = touchOf(e);
      if (!t) return;
      if (!g.swiping) {
        const dy = t.clientY - g.y0;
        // A mostly sideways move is not ours (a selection drag, the browser's back gesture).
        if (Math.abs(dy) < SLOP_PX || Math.abs(dy) < Math.abs(t.clientX - g.x0)) return;
        g.swiping = true;
        g.y = t.clientY;
      }
      // Ours from here: neither xterm nor the page may act on it as well.
      e.preventDefault();
      e.stopPropagation();
      movePx(t.clientY - g.y);
      g.y = t.clientY;
      g.samples.push([e.timeStamp, t.clientY]);
      while (g.samples.length > 2 && e.timeStamp - g.samples[0][0] > VELOCITY_WINDOW_MS) g.samples.shift();
    }, { capture: true, passive: false });

    function end(e) {
      if (g.id === null || !touchOf(e)) return;
      const swiped = g.swiping;
      g.id = null;
      g.swiping = false;
      if (!swiped) return;
      // A swipe is not a tap: xterm must not take its end for a click.
      e.preventDefault();
      e.stopPropagation();
      const first = g.samples[0];
      const last = g.samples[g.samples.length - 1];
      const dt = last[0] - first[0];
      // A finger that stopped before lifting has no fling.
      if (dt <= 0 || e.timeStamp - last[0] > VELOCITY_WINDOW_MS) return;
      let v = (last[1] - first[1]) / dt;
      let prev = performance.now();
      const until = prev + MAX_FLING_MS;
      const frame = (now) => {
        const step = Math.min(64, Math.max(0, now - prev));
        prev = now;
        movePx(v * step);
        v *= Math.pow(FRICTION, step / 16);
        g.raf = Math.abs(v) > STOP_SPEED && now < until ? requestAnimationFrame(frame) : 0;
      };
      g.raf = requestAnimationFrame(frame);
    }
    el.addEventListener('touchend', end, { capture: true, passive: false });
    el.addEventListener('touchcancel', (e) => {
      if (g.id !== null && touchOf(e)) g.id = null;
    }, { capture: true, passive: true });

    return { stop: stopFling, get flinging() { return g.raf !== 0; } };
  }

  ns.touch = { install };
})(window.keepty = window.keepty || {});
