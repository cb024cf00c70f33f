// The ECG strip under a run's cine (/api/instances/<uid>/ecg, viewer/ecg.py):
// the lead across the run's time, the R-waves marked, a cursor at the frame
// shown, the lead and rate named. Drawn as one of viewer.js's overlays, in
// CSS pixels under the image (over its bottom when the letterbox has no
// room; the "ECG" checkbox hides it), for runs whose /meta says they carry
// an ECG; nothing is drawn for the others, nor for single images. With
// "One beat" ticked, a run plays only the beat its shown frame is in,
// shaded on the strip.
//
// window.ecgApi.state(i): what viewport i's strip shows (for tests and
// measure.js): lead, rate, the cursor's time and where it lies in its beat;
// rWaves(vp), a viewport's R-wave times, for compare.js.
"use strict";

(() => {
  const api = window.viewerApi;
  const { t, fmt } = window;
  const found = new Map(); // uid -> the ECG, false when none, undefined while asked
  const COLOUR = { trace: "#5f5", r: "#f66", cursor: "#fd4", text: "#dfd" };

  function ecgOf(uid) {
    if (!found.has(uid)) {
      found.set(uid, undefined);
      fetch(`/api/instances/${uid}/ecg`).then((r) => (r.ok ? r.json() : false), () => false)
        .then((body) => { found.set(uid, body); api.viewports.forEach(api.draw); });
    }
    return found.get(uid);
  }

  // The time (s after the first frame) at which frame i starts.
  function frameTime(vp, frame) {
    let ms = 0;
    for (let i = 0; i < frame; i += 1) ms += vp.times[i] || 0;
    return ms / 1000;
  }

  const shown = () => !document.getElementById("ecg-strip") || document.getElementById("ecg-strip").checked;
  const oneBeat = () => Boolean(document.getElementById("one-beat") && document.getElementById("one-beat").checked);

  // The frames of the beat (R-wave to R-wave) the shown frame is in, which
  // "One beat" plays in a loop (viewer.js reads vp.range); before the first
  // R-wave the first whole beat, after the last the last one. null when no
  // whole beat holds two frames.
  function beatOf(vp, r) {
    if (r.length < 2) return null;
    const at = frameTime(vp, vp.frame);
    const i = Math.min(Math.max(r.filter((x) => x <= at).length - 1, 0), r.length - 2);
    const starts = vp.times.map((_, f) => frameTime(vp, f));
    const frames = starts.map((_, f) => f).filter((f) => starts[f] >= r[i] && starts[f] < r[i + 1]);
    return frames.length >= 2 ? { range: [frames[0], frames[frames.length - 1]], beat: [r[i], r[i + 1]] } : null;
  }

  // Trimmed to one beat while the box is ticked; a frame stepped to outside
  // the beat (stopped) trims to its own beat.
  function trim(vp, now) {
    const outside = vp.range && !vp.playing && (vp.frame < vp.range[0] || vp.frame > vp.range[1]);
    if (!oneBeat() || !now || outside) { vp.range = null; vp.beat = null; }
    if (oneBeat() && now && !vp.range) Object.assign(vp, beatOf(vp, now.r_waves) || { range: null, beat: null });
  }

  function state(vp) {
    // A run of frames: a single image (a Doppler sweep) has its own ECG drawn
    // in its pixels, on its own time axis, which a strip here would misalign.
    if (!vp || !vp.meta || !vp.meta.ecg || vp.stack || vp.times.length < 2) return null;
    const ecg = ecgOf(vp.meta.uid);
    if (!ecg) return null;
    const cursor = frameTime(vp, vp.frame);
    const before = ecg.r_waves.filter((r) => r <= cursor).pop();
    const after = ecg.r_waves.find((r) => r > cursor);
    const cycle = before !== undefined && after !== undefined
      ? { since_r_ms: Math.round((cursor - before) * 1000), fraction: (cursor - before) / (after - before) } : null;
    return { lead: ecg.lead, rate: ecg.rate, cursor, r_waves: ecg.r_waves, cycle, ecg };
  }

  window.viewerOverlays = window.viewerOverlays || [];
  window.viewerOverlays.push((vp, ctx, view) => {
    const now = state(vp);
    if (vp.clip) trim(vp, now);
    if (!now || !shown()) return;
    const { ecg } = now;
    const height = Math.max(36, Math.min(90, view.height * 0.16));
    // Under the image where the letterbox leaves room, else over its bottom
    // (the checkbox hides it).
    const below = view.point([0, vp.clip.height])[1] + 4;
    const top = below + height + 4 <= view.height ? below : view.height - height - 4;
    const left = 4, width = view.width - 8;
    const runEnd = frameTime(vp, vp.times.length);
    const start = Math.min(0, ecg.offset_s), end = Math.max(runEnd, ecg.offset_s + ecg.duration_s);
    const x = (time) => left + ((time - start) / (end - start || 1)) * width;
    const y = (value) => top + height / 2 - value * height * 0.42;
    ctx.fillStyle = "rgba(0,0,0,.6)";
    ctx.fillRect(left, top, width, height);
    if (vp.beat) { // the beat played
      ctx.fillStyle = "rgba(255,221,68,.18)";
      ctx.fillRect(x(vp.beat[0]), top, x(vp.beat[1]) - x(vp.beat[0]), height);
    }
    ctx.lineWidth = 1.25; ctx.strokeStyle = COLOUR.trace;
    ctx.beginPath();
    ecg.points.forEach(([time, value], i) => (i ? ctx.lineTo(x(time), y(value)) : ctx.moveTo(x(time), y(value))));
    ctx.stroke();
    ctx.fillStyle = COLOUR.r;
    for (const r of ecg.r_waves) {
      ctx.beginPath(); ctx.moveTo(x(r) - 4, top); ctx.lineTo(x(r) + 4, top); ctx.lineTo(x(r), top + 7); ctx.fill();
    }
    // Frames tagged end-diastole / end-systole (measure.js), as letters on the strip.
    const tags = window.measureApi && window.measureApi.phases ? window.measureApi.phases() : new Map();
    ctx.font = "11px sans-serif"; ctx.fillStyle = COLOUR.cursor;
    for (const [key, phase] of tags) {
      const [uid, frame] = key.split(":");
      if (uid === vp.meta.uid) ctx.fillText(phase, x(frameTime(vp, Number(frame))) - 6, top + 18);
    }
    ctx.strokeStyle = COLOUR.cursor; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x(now.cursor), top); ctx.lineTo(x(now.cursor), top + height); ctx.stroke();
    ctx.font = "12px sans-serif"; ctx.fillStyle = COLOUR.text;
    const rate = ecg.rate ? ` · ${fmt(ecg.rate, 0)} ${t("/min")}` : "";
    const since = now.cycle ? ` · ${t("{ms} ms after R", { ms: now.cycle.since_r_ms })}` : "";
    const lead = ecg.lead === "ECG" ? "" : ` ${t(ecg.lead)}`;
    ctx.fillText(`${t("ECG")}${lead}${rate}${since}`, left + 4, top + height - 4);
  });

  for (const id of ["ecg-strip", "one-beat"]) {
    const box = document.getElementById(id);
    if (box) box.addEventListener("change", () => api.viewports.forEach(api.draw));
  }

  window.ecgApi = {
    state: (i) => { const s = state(api.viewports[i]); return s && { ...s, ecg: undefined }; },
    // The R-wave times of a viewport's run, on its frames' time (compare.js); null without.
    rWaves: (vp) => { const s = state(vp); return s && s.r_waves; },
  };
})();
