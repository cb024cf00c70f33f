// Two viewports in step ("In step"): the one the cardiologist plays or steps
// leads, the other follows it to the same point of the heart's cycle. Where
// both runs carry an ECG with at least one whole beat, the leader's time is
// read as a phase (beats since its first R-wave, the fraction of the beat it
// is in) and the follower shows its frame nearest the same fraction of its
// own beat of the same number (counted round its whole beats); otherwise
// the follower shows the same fraction of its run. The mode in use is
// named beside the checkbox, with why when it is the fraction.
//
// A series of the child's other studies (the "Compare" list) opens in the
// second viewport, read-only for measuring (measure.js): its measurements
// belong to its own study's plan.
"use strict";

(() => {
  const api = window.viewerApi;
  const { t } = window;
  const $ = (id) => document.getElementById(id);
  const box = $("sync");
  let mode = null; // "cycle" | "fraction" | null (not in step), as last applied

  // Beats since the first R-wave, continuous; before the first and after the
  // last R-wave, the nearest beat's length carries it on.
  function phase(r, time) {
    let i = 0;
    while (i < r.length - 2 && r[i + 1] <= time) i += 1;
    return i + (time - r[i]) / (r[i + 1] - r[i]);
  }

  function timeAt(r, p) {
    const i = Math.min(Math.max(Math.floor(p), 0), r.length - 2);
    return r[i] + (p - i) * (r[i + 1] - r[i]);
  }

  // Each frame's start (s after the first), kept per clip.
  const starts = new WeakMap();
  function startsOf(vp) {
    if (!starts.has(vp.times)) {
      let ms = 0;
      starts.set(vp.times, vp.times.map((each) => { const at = ms / 1000; ms += each || 0; return at; }));
    }
    return starts.get(vp.times);
  }

  function nearestFrame(vp, time) {
    const at = startsOf(vp).slice(0, api.count(vp));
    return at.reduce((best, s, i) => (Math.abs(s - time) < Math.abs(at[best] - time) ? i : best), 0);
  }

  const run = (vp) => Boolean(vp && vp.clip && !vp.stack && api.count(vp) > 1);
  const beats = (vp) => {
    const r = window.ecgApi && window.ecgApi.rWaves(vp);
    return r && r.length >= 2 ? r : null;
  };

  // The follower's frame for the leader's, and how it was found.
  function follow(leader, follower) {
    const rl = beats(leader), rf = beats(follower);
    if (rl && rf) {
      const p = phase(rl, startsOf(leader)[leader.frame]);
      const whole = rf.length - 1;
      const beat = ((Math.floor(p) % whole) + whole) % whole;
      return { frame: nearestFrame(follower, timeAt(rf, beat + p - Math.floor(p))), mode: "cycle" };
    }
    const n = api.count(follower);
    return { frame: Math.min(n - 1, Math.floor(((leader.frame + 0.5) * n) / api.count(leader))), mode: "fraction" };
  }

  function say(text) { if ($("sync-mode").textContent !== text) $("sync-mode").textContent = text; }

  window.viewerSync = () => {
    const [a, b] = api.viewports;
    box.disabled = !b;
    const leader = api.active(), follower = leader === a ? b : a;
    for (const vp of api.viewports) vp.following = false;
    mode = null;
    if (!box.checked || !b) { say(""); return; }
    if (!run(a) || !run(b)) { say(t("needs a run of frames in each viewport")); return; }
    follower.following = true;
    follower.playing = false;
    const next = follow(leader, follower);
    mode = next.mode;
    say(mode === "cycle" ? t("by the cardiac cycle (ECG)")
      : `${t("by the fraction of the run")} (${t("no ECG beat in one run")})`);
    if (next.frame !== follower.frame) { follower.frame = next.frame; api.draw(follower); }
  };

  for (const thumb of document.querySelectorAll("#compare .thumb")) {
    thumb.onclick = () => {
      api.openSeries(api.split(), thumb);
      $("viewports").scrollIntoView({ block: "nearest" }); // the list may have scrolled them away
    };
  }

  window.compareApi = { mode: () => mode };
})();
