// Measurements and calibrations on the viewports. Values are computed by the
// server (one calibration implementation, with its source); this file takes
// the points through viewer.js's one geometry (window.viewerTool), draws
// lines, handles and labels in screen space and keeps the two lists.
//
// A calibration (a line over a catheter of known French size, or over a
// known length) is an object: it belongs to the runs of the series it was
// drawn on that share its image's geometry (size, pixel spacing,
// magnification: the server's fingerprint, /api/instances/<uid>/geometry),
// or only to its frame (ultrasound, whose regions are per image).
// A new measurement uses the latest calibration in scope; every measurement
// names the one it used (calibration_id) and keeps it until it is cleared.
//
// window.measureApi (planning.js): measurements(), calibrations(),
// calibration() (the one in scope on screen), lastLength(), load(content)
// (replaces what is drawn by a saved plan's measurements and calibrations).
"use strict";

(() => {
  const api = window.viewerApi;
  const { t, fmt } = window;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const editable = Boolean($("tool")); // researchers get no tools: the server refuses them
  const measurements = []; // {uid, frame, kind, points, value, unit, source, calibration_id}
  const calibrations = []; // {id, points, french | mm, scope: {kind, uid, frame, series}}
  const NEEDED = { length: 2, angle: 3, ellipse: 2, calibrate: 2, "calibrate-length": 2, bidirectional: 4,
    velocity: 1, interval: 2, "m-mode": 2, "vti-auto": 2, vti: Infinity, area: Infinity, profile: 2 };
  // Read through the ultrasound region under the points (the server's
  // viewer/planning/doppler.py): no calibration applies.
  // A trace ends on Enter or a double-click; "vti-auto" asks the server for
  // the envelope between its two clicks and becomes a trace to correct.
  const REGION = new Set(["velocity", "interval", "m-mode", "vti"]);
  const MOST_TRACE = 2000; // points of one trace, as the server
  // An outline ("area") is clicked point by point (Enter, a double-click or
  // a click on its first point closes it) or dragged freehand (closed on
  // release, or on coming back to its start): a point every DRAG_PX screen
  // pixels, thinned to every other one when it would pass MOST_OUTLINE.
  const TRACED = new Set(["vti", "area"]);
  const MOST_OUTLINE = 500;
  const DRAG_PX = 2;
  const PHASE_NAMES = { ED: "end-diastole", ES: "end-systole" };
  // A measurement's kind as its tool names it (the print page says the same).
  const KIND_NAMES = { vti: "VTI", bidirectional: "long and short axis", area: "traced area" };
  const CALIBRATED_UNITS = new Set(["mm", "mm²", "°", "m/s", "ms", "cm"]);
  const MIN_CALIBRATION_PX = 5; // as the server: a shorter line cannot calibrate
  const SCALE = [0.005, 5]; // mm per image pixel, as the server
  const REACH = 8; // CSS pixels around an end that pick it up
  const DRAG_START = 3; // CSS pixels a press on an end moves before it drags it
  const COLOUR = { measurement: "#4f4", calibration: "#4df", pending: "#fa4", selected: "#fd4" };
  // Frames the cardiologist tagged end-diastole or end-systole, by
  // "uid:frame"; a measurement keeps the phase of its frame.
  const phases = new Map();
  const phaseOf = (uid, frame) => phases.get(`${uid}:${frame}`) || null;
  let pending = { vp: null, at: null, points: [] };
  let selected = null; // a measurement or a calibration
  let dragging = null; // {item, index, before, moved}
  let lastId = 0;
  let note = "";
  const geometries = new Map(); // uid -> Promise of its geometry fingerprint
  const known = new Map(); // uid -> the fingerprint, once it has arrived

  const tool = () => (editable ? $("tool").value : "none");
  const same = (a, b) => Boolean(a && b && a.uid === b.uid && a.frame === b.frame);
  const where = (item) => (item.scope ? { uid: item.scope.uid, frame: item.scope.frame } : item);
  const byId = (id) => calibrations.find((c) => c.id === id) || null;
  const redraw = () => api.viewports.forEach(api.draw);
  const message = (text) => { if ($("measure-message")) $("measure-message").textContent = text; };
  const what = (c) => (c.french !== undefined ? t("catheter {n}F", { n: c.french })
    : t("known length {n} mm", { n: fmt(c.mm) }));
  const mmPerPx = (c) => (c.french !== undefined ? c.french / 3 : c.mm) /
    Math.hypot(c.points[1][0] - c.points[0][0], c.points[1][1] - c.points[0][1]);

  // An image's geometry fingerprint: asked once, the views redrawn when it comes.
  function geometry(uid) {
    if (!uid) return Promise.resolve(null);
    if (!geometries.has(uid)) {
      geometries.set(uid, fetch(`/api/instances/${uid}/geometry`)
        .then((r) => (r.ok ? r.json() : {})).then((body) => body.geometry || null, () => null)
        .then((found) => { known.set(uid, found); redraw(); return found; }));
    }
    return geometries.get(uid);
  }
  const sameGeometry = (a, b) => a === b ||
    (known.get(a) !== undefined && known.get(a) !== null && known.get(a) === known.get(b));

  // The series calibrations of this image's series, and the ones among them
  // drawn on an image of its geometry (the others would misstate lengths).
  function ofSeries(uid) {
    const series = api.seriesOf(uid);
    return calibrations.filter((c) => c.scope.kind === "series" && c.scope.series === series);
  }

  // The calibration a new measurement at (uid, frame) uses: the latest
  // drawn for that frame, else the latest for its series at its geometry.
  function applicable(uid, frame) {
    const own = calibrations.filter((c) => c.scope.kind === "frame" && c.scope.uid === uid && c.scope.frame === frame);
    const series = ofSeries(uid);
    for (const c of series) { geometry(uid); geometry(c.scope.uid); }
    return own.pop() || series.filter((c) => sameGeometry(uid, c.scope.uid)).pop() || null;
  }

  // A measurement keeps its calibration; once that is cleared, it takes what applies.
  function calibrationFor(m) {
    if (m.calibration_id === null || m.calibration_id === undefined) return null;
    return byId(m.calibration_id) || applicable(m.uid, m.frame);
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    return [response.status, await response.json()];
  }

  // A measuring request whose refusal is said to the user: the answer, or null.
  async function ask(url, body) {
    const [status, result] = await post(url, body);
    if (status === 200) return result;
    message(t(result.message || "The measurement failed."));
    redraw();
    return null;
  }

  async function compute(m, calibration) {
    const result = await ask(`/api/instances/${m.uid}/measure`,
      { kind: m.kind, points: m.points, frame: m.frame, calibration });
    if (!result) return false;
    Object.assign(m, result);
    message("");
    if (m.structure) await zscoreOf(m, m.structure); // the length moved: its z-score too
    return true;
  }

  // A length's z-score once the structure it measures is named (the
  // server's zscores.py, from the study's BSA); none when unnamed or refused.
  const STRUCTURES = $("zscore-structures") ? JSON.parse($("zscore-structures").textContent) : {};
  async function zscoreOf(m, structure) {
    m.structure = structure || null;
    m.zscore = null;
    if (structure) {
      const result = await ask(`/api/studies/${document.body.dataset.study}/zscore`, { structure, mm: m.value });
      if (result) m.zscore = result; else m.structure = null;
    }
    render();
  }

  async function remeasureUsing(id) {
    for (const m of measurements.filter((x) => x.calibration_id === id)) await compute(m, calibrationFor(m));
    render(); redraw();
  }

  function select(item) { selected = item; render(); redraw(); }

  function remove(item) {
    if (selected === item) selected = null;
    const list = item.scope ? calibrations : measurements;
    if (list.includes(item)) list.splice(list.indexOf(item), 1);
    if (item.scope) remeasureUsing(item.id); // its measurements fall back to what applies now
    render(); redraw();
  }

  function clearPending() { pending = { vp: null, at: null, points: [] }; redraw(); }

  // A freehand outline's next point under the dragging pointer: far enough
  // from the last on screen, thinned past the bound; back at its start, it closes.
  function dragOutline(vp, point) {
    const g = api.geometry(vp);
    const last = pending.points[pending.points.length - 1];
    const apart = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]) * g.scale;
    if (!pending.dragged && apart(point, last) < 3 * REACH) return; // a click's jitter, not a drag
    if (apart(point, last) < pending.spacing) return;
    pending.points.push(clamp(vp, point));
    pending.dragged = true;
    if (apart(point, pending.points[0]) > 3 * REACH) pending.away = true;
    if (pending.away && apart(point, pending.points[0]) <= REACH) { finish(vp); return; }
    if (pending.points.length >= MOST_OUTLINE) {
      pending.points = pending.points.filter((_, i) => i % 2 === 0);
      pending.spacing *= 2;
    }
    redraw();
  }

  // A line drawn down a vessel: its diameter every pixel (/profile), the
  // narrowest kept as a length between its edges, the others drawn faintly.
  async function addProfile(m) {
    await Promise.all([m.uid, ...ofSeries(m.uid).map((c) => c.scope.uid)].map(geometry));
    const calibration = applicable(m.uid, m.frame);
    const result = await ask(`/api/instances/${m.uid}/profile`, { points: m.points, frame: m.frame, calibration });
    if (!result) return;
    const n = result.narrowest;
    Object.assign(m, { kind: "length", points: n.points, value: n.value, unit: n.unit, source: n.source,
      calibration_id: result.calibration_id, profile: result.stations.map((s) => s.points) });
    message(t("Narrowest of {n} diameters along the line: {value} {unit}.", { n: result.stations.length, value: fmt(n.value), unit: t(n.unit) }));
    measurements.push(m); select(m);
  }

  // A catheter line snaps to the catheter's edges, at right angles to it
  // (/edges); where none is found the line stays as drawn, and says why.
  async function snap(at, points) {
    const [status, result] = await post(`/api/instances/${at.uid}/edges`, { points, frame: at.frame });
    if (status === 200) return [result.points, t("Snapped to the catheter's edges.")];
    return [points, t("Not snapped: {why}", { why: t(result.message || "") })];
  }

  async function addCalibration(vp, at, drawn, kind) {
    const known = kind === "calibrate" ? { french: Number($("french").value) } : { mm: Number($("known-mm").value) };
    if (known.mm !== undefined && !(known.mm >= 0.1 && known.mm <= 1000)) {
      message(t("Enter the known length in mm (0.1 to 1000).")); return;
    }
    let points = drawn, said = "";
    if (kind === "calibrate") [points, said] = await snap(at, drawn);
    const [[x1, y1], [x2, y2]] = points;
    const pixels = Math.hypot(x2 - x1, y2 - y1);
    if (pixels < MIN_CALIBRATION_PX) {
      message(t("The calibration line is too short to calibrate on (at least {n} image pixels): draw it across the whole catheter or known length, zoomed in if need be.", { n: MIN_CALIBRATION_PX }));
      return;
    }
    const scale = (known.french !== undefined ? known.french / 3 : known.mm) / pixels;
    if (!(scale >= SCALE[0] && scale <= SCALE[1])) {
      message(t("This calibration gives {n} mm per pixel, which no image has: check the known length and the line.", { n: fmt(scale, 4) }));
      return;
    }
    const series = api.seriesOf(at.uid);
    const scope = vp.meta.modality === "US" || !series
      ? { kind: "frame", uid: at.uid, frame: at.frame }
      : { kind: "series", series, uid: at.uid, frame: at.frame };
    const calibration = { id: ++lastId, points, ...known, scope };
    calibrations.push(calibration);
    geometry(at.uid);
    message(said);
    select(calibration);
  }

  async function finish(vp) {
    const { at, points } = pending;
    const kind = tool();
    pending = { vp: null, at: null, points: [] };
    if (kind.startsWith("calibrate")) { addCalibration(vp, at, points, kind); return; }
    const m = { uid: at.uid, frame: at.frame, kind, points, calibration_id: null, phase: phaseOf(at.uid, at.frame) };
    redraw();
    if (kind === "profile") { await addProfile(m); return; }
    if (kind === "vti-auto") {
      const result = await ask(`/api/instances/${at.uid}/envelope`, { points, frame: at.frame });
      if (!result) return;
      Object.assign(m, result, { kind: "vti" });
      message(t("Check the suggested envelope: drag any point onto the edge of the spectrum."));
      measurements.push(m); select(m);
      return;
    }
    if (REGION.has(kind)) {
      if (await compute(m, null)) { measurements.push(m); select(m); } else redraw();
      return;
    }
    await Promise.all([at.uid, ...ofSeries(at.uid).map((c) => c.scope.uid)].map(geometry));
    if (await compute(m, applicable(at.uid, at.frame))) { measurements.push(m); select(m); }
    else redraw();
  }

  // Whether a point is within reach, on screen, of the pending outline's first.
  function nearFirst(vp, [x, y]) {
    const [fx, fy] = pending.points[0], g = api.geometry(vp);
    return Math.hypot(x - fx, y - fy) * g.scale <= REACH;
  }

  // The end of a drawn item nearest to the point, within reach on screen.
  function nearEnd(vp, point) {
    const here = api.position(vp), g = api.geometry(vp);
    const items = [...calibrations.filter((c) => same(here, where(c))), ...measurements.filter((m) => same(here, m))];
    if (selected && items.includes(selected)) items.unshift(selected);
    for (const item of items) { // the nearest point of the first item in reach (a trace's are close)
      let best = -1, distance = Infinity;
      item.points.forEach(([x, y], i) => {
        const d = Math.hypot(x - point[0], y - point[1]) * g.scale;
        if (d <= REACH && d < distance) { best = i; distance = d; }
      });
      if (best >= 0) return { item, index: best };
    }
    return null;
  }

  const inside = (vp, [x, y]) => x >= 0 && y >= 0 && x <= vp.clip.width && y <= vp.clip.height;
  const clamp = (vp, [x, y]) => [Math.min(Math.max(x, 0), vp.clip.width), Math.min(Math.max(y, 0), vp.clip.height)];

  // What viewer.js calls on a canvas: true when the pointer is the tool's.
  window.viewerTool = {
    down(vp, point) {
      if (tool() === "none" || !point || !vp.meta) return false;
      if (vp.compared) { // its measurements belong to its own study's plan
        message(t("This series is another study's, shown to compare: open that study to measure it."));
        return true;
      }
      const tracing = TRACED.has(tool()) && pending.vp === vp && pending.points.length > 0;
      const hit = tracing ? null : nearEnd(vp, point); // a trace's clicks only add points
      // A press on an end drags it once the pointer moves; a click there is a
      // new point (a rim's end is often another line's). An outline started
      // on another kind's end is an outline.
      if (hit && !(tool() === "area" && hit.item.kind !== "area")) {
        dragging = { ...hit, before: hit.item.points.map((p) => [...p]), moved: false, at: point };
        return true;
      }
      return addPoint(vp, point);
    },
    move(vp, point) {
      if (pending.pressed && pending.vp === vp && point) { dragOutline(vp, point); return; }
      if (!dragging || !point) return;
      if (!dragging.moved) {
        const g = api.geometry(vp);
        if (Math.hypot(point[0] - dragging.at[0], point[1] - dragging.at[1]) * g.scale < DRAG_START) return;
        select(dragging.item);
      }
      const moved = clamp(vp, point);
      // A trace's point moves up or down only: onto the spectrum's edge at its time.
      if (dragging.item.kind === "vti") moved[0] = dragging.before[dragging.index][0];
      dragging.item.points[dragging.index] = moved;
      dragging.moved = true;
      redraw();
    },
    async up(vp) {
      if (pending.pressed) { // a freehand outline ends where the button is let go
        pending.pressed = false;
        if (pending.dragged && pending.vp === vp && pending.points.length >= 3) finish(vp);
        return;
      }
      const done = dragging;
      dragging = null;
      if (done && !done.moved) { // a click on an end: a new point there
        addPoint(vp, done.at);
        pending.pressed = false;
        return;
      }
      if (!done) return;
      const { item } = done;
      if (item.scope) { await remeasureUsing(item.id); return; }
      const scale = REGION.has(item.kind) ? null : calibrationFor(item);
      if (!(await compute(item, scale))) item.points = done.before; // refused: as it was
      render(); redraw();
    },
  };

  // A point of the measurement being drawn; the tool finishes it when it has its points.
  function addPoint(vp, point) {
    if (!inside(vp, point)) return true; // the letterbox: nothing to measure there
    const here = api.position(vp);
    if (pending.vp !== vp || !same(pending.at, here)) pending = { vp, at: here, points: [], spacing: DRAG_PX };
    vp.playing = false;
    const last = pending.points[pending.points.length - 1];
    if (tool() === "area" && pending.points.length >= 3 && nearFirst(vp, point)) { finish(vp); return true; }
    if (tool() === "area" && pending.points.length >= MOST_OUTLINE) { finish(vp); return true; }
    if (!(TRACED.has(tool()) && last && last[0] === point[0] && last[1] === point[1])) pending.points.push(point);
    pending.pressed = tool() === "area"; // a drag from here draws the outline freehand
    if (pending.points.length >= Math.min(NEEDED[tool()], MOST_TRACE)) finish(vp);
    else redraw();
    return true;
  }

  function stroke(ctx, shape, colour, width) {
    ctx.strokeStyle = "rgba(0,0,0,.7)"; ctx.lineWidth = width + 2; shape(); ctx.stroke();
    ctx.strokeStyle = colour; ctx.lineWidth = width; shape(); ctx.stroke();
  }

  // Text beside a point, turned inward where it would leave the viewport.
  function label(ctx, view, text, [x, y], colour) {
    ctx.font = "13px sans-serif";
    const width = ctx.measureText(text).width;
    const left = x + 6 + width > view.width ? Math.max(2, x - 6 - width) : x + 6;
    const base = y - 6 < 14 ? y + 18 : y - 6;
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(0,0,0,.8)"; ctx.strokeText(text, left, base);
    ctx.fillStyle = colour; ctx.fillText(text, left, base);
  }

  // One item in screen space: its lines, its ends as handles, a label.
  function drawItem(ctx, view, kind, points, colour, text, chosen) {
    const p = points.map(view.point);
    const width = chosen ? 3 : 2;
    if (kind === "ellipse" && p.length === 2) {
      const [[cx, cy], [ex, ey]] = p;
      stroke(ctx, () => { ctx.beginPath(); ctx.ellipse(cx, cy, Math.abs(ex - cx), Math.abs(ey - cy), 0, 0, 2 * Math.PI); }, colour, width);
    } else if (kind === "bidirectional") { // a long and a short axis: two lines
      stroke(ctx, () => { ctx.beginPath(); for (let i = 0; i + 1 < p.length; i += 2) { ctx.moveTo(...p[i]); ctx.lineTo(...p[i + 1]); } }, colour, width);
    } else if (kind === "area" && p.length > 2) { // an outline, closed on its start
      stroke(ctx, () => { ctx.beginPath(); p.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.closePath(); }, colour, width);
    } else if (kind === "angle" && p.length > 1) { // two rays from the vertex (the first point)
      stroke(ctx, () => { ctx.beginPath(); for (const q of p.slice(1)) { ctx.moveTo(...p[0]); ctx.lineTo(...q); } }, colour, width);
    } else if (p.length > 1) {
      stroke(ctx, () => { ctx.beginPath(); p.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); }, colour, width);
    }
    const size = TRACED.has(kind) ? 2 : 4; // a trace's many points: small handles
    for (const [x, y] of p) {
      ctx.fillStyle = "#000"; ctx.fillRect(x - size, y - size, 2 * size, 2 * size);
      ctx.fillStyle = colour; ctx.fillRect(x - size + 1, y - size + 1, 2 * size - 2, 2 * size - 2);
    }
    if (text) label(ctx, view, text, p[p.length - 1], colour);
  }

  window.viewerOverlays = [(vp, ctx, view) => {
    const here = api.position(vp);
    if (!here) return;
    if (editable && vp === api.active()) { // the tag buttons say whether this frame is tagged
      for (const [id, phase] of [["tag-ed", "ED"], ["tag-es", "ES"]]) {
        const on = phaseOf(here.uid, here.frame) === phase;
        $(id).classList.toggle("on", on);
        $(id).setAttribute("aria-pressed", String(on));
      }
    }
    ctx.lineJoin = "round";
    for (const c of calibrations.filter((x) => same(here, where(x)))) {
      drawItem(ctx, view, "length", c.points, c === selected ? COLOUR.selected : COLOUR.calibration,
        `${t("Calibration {n}", { n: c.id })}: ${what(c)}`, c === selected);
    }
    for (const m of measurements.filter((x) => same(here, x) && x.profile && x === selected)) {
      ctx.strokeStyle = "rgba(120,255,120,.4)"; ctx.lineWidth = 1;
      ctx.beginPath();
      for (const [a, b] of m.profile) { ctx.moveTo(...view.point(a)); ctx.lineTo(...view.point(b)); }
      ctx.stroke();
    }
    for (const m of measurements.filter((x) => same(here, x))) {
      const used = m.calibration_id ? ` · ${t("Calibration {n}", { n: m.calibration_id })}` : "";
      drawItem(ctx, view, m.kind, m.points, m === selected ? COLOUR.selected : COLOUR.measurement,
        `${shown(m)}${used}`, m === selected);
    }
    if (pending.vp === vp && same(pending.at, here)) {
      const drawing = ["ellipse", "angle", "bidirectional"].includes(tool()) ? tool() : "length"; // an outline still open
      drawItem(ctx, view, drawing, pending.points, COLOUR.pending, "", false);
    }
    const scale = applicable(here.uid, here.frame);
    const elsewhere = !scale && ofSeries(here.uid).filter((c) => known.has(here.uid) && known.has(c.scope.uid)).pop();
    if (scale) label(ctx, view, t("scale: calibration {n}, {what}", { n: scale.id, what: what(scale) }), [4, view.height - 4], COLOUR.calibration);
    else if (elsewhere) {
      label(ctx, view, t("scale: the image's own; calibration {n} was drawn on a run of another geometry", { n: elsewhere.id }),
        [4, view.height - 4], COLOUR.pending);
    }
  }];

  // A value as a person reads it, with what the region gives besides: the
  // gradient of a velocity, the rate of an interval, an M-mode's time and slope.
  function shown(m) {
    const digits = m.unit === "m/s" ? 2 : 1;
    let text = `${fmt(m.value, digits)} ${t(m.unit)}`;
    if (m.kind === "bidirectional" && m.short !== undefined) text = `${fmt(m.value, digits)} × ${fmt(m.short, digits)} ${t(m.unit)}`;
    if (m.zscore) {
      text += ` · ${t("z {z} for the {structure} (mean {mean} mm at BSA {bsa} m²)", { z: fmt(m.zscore.z, 1),
        structure: t(m.zscore.label), mean: fmt(m.zscore.mean_mm), bsa: fmt(m.zscore.bsa_m2, 2) })}`;
    }
    if (m.kind === "velocity" && m.gradient !== undefined) text += ` · ${fmt(m.gradient)} ${t("mmHg")}`;
    if (m.kind === "interval" && m.rate) text += ` · ${fmt(m.rate)} ${t("/min")}`;
    if (m.kind === "vti" && m.peak_velocity !== undefined) {
      text += ` · ${t("peak {v} m/s, {g} mmHg", { v: fmt(m.peak_velocity, 2), g: fmt(m.peak_gradient) })}`;
      text += ` · ${t("mean {v} m/s, {g} mmHg", { v: fmt(m.mean_velocity, 2), g: fmt(m.mean_gradient) })}`;
    }
    if (m.kind === "m-mode") {
      text += ` · ${fmt(m.time_ms)} ${t("ms")}`;
      if (m.slope !== null && m.slope !== undefined) text += ` · ${fmt(m.slope)} ${t("mm/s")}`;
    }
    return text;
  }

  function row(list, item, text, warning) {
    const li = document.createElement("li");
    li.textContent = text + " ";
    if (editable && !item.scope) { // a measurement's label: what it is of ("PDA, pulmonary end")
      const input = document.createElement("input");
      Object.assign(input, { type: "text", className: "label", maxLength: 64, value: item.label || "",
        placeholder: t("label"), title: t("What this measures, as the plan and its report will name it") });
      input.onclick = (e) => e.stopPropagation();
      input.onchange = () => { item.label = input.value.trim() || null; };
      li.appendChild(input);
      if (item.unit === "mm" && ["length", "m-mode"].includes(item.kind) && Object.keys(STRUCTURES).length) {
        const pick = document.createElement("select"); // what it measures, for a z-score
        pick.className = "structure";
        pick.title = t("The structure this length measures, for its z-score");
        pick.append(new Option(t("z-score: none"), ""),
          ...Object.entries(STRUCTURES).map(([key, name]) => new Option(t(name), key)));
        pick.value = item.structure || "";
        pick.onclick = (e) => e.stopPropagation();
        pick.onchange = () => zscoreOf(item, pick.value);
        li.appendChild(pick);
      }
    }
    li.classList.toggle("warning", Boolean(warning));
    li.classList.toggle("selected", item === selected);
    li.onclick = () => { select(item); const at = where(item); api.show(at.uid, at.frame); };
    if (editable) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = item.scope ? t("Clear") : t("Delete");
      button.onclick = (e) => { e.stopPropagation(); remove(item); };
      li.appendChild(button);
    }
    list.appendChild(li);
  }

  function render() {
    $("measurements").innerHTML = "";
    for (const m of measurements) {
      const phase = m.phase ? `, ${t(PHASE_NAMES[m.phase])}` : "";
      const stacked = api.stackIndex(m.uid); // a stack's image, not a run's frame
      const at = stacked ? t("image {n}", { n: `${stacked[0]}/${stacked[1]}` }) : t("frame {n}", { n: m.frame + 1 });
      row($("measurements"), m, `${t(KIND_NAMES[m.kind] || m.kind)} ${shown(m)} (${at}${phase}; ${t(m.source)})`,
        !CALIBRATED_UNITS.has(m.unit));
    }
    if ($("calibrations")) {
      $("calibrations").innerHTML = "";
      for (const c of calibrations) {
        const scope = c.scope.kind === "series" ? t("applies to its series") : t("applies to this frame only");
        row($("calibrations"), c, `${t("Calibration {n}", { n: c.id })}: ${what(c)}, ${fmt(mmPerPx(c), 3)} ${t("mm/px")}, ` +
          `${t("frame {n}", { n: c.scope.frame + 1 })}; ${scope}`);
      }
    }
    if ($("calibration")) $("calibration").textContent = note;
  }

  // Tag the active viewport's frame (again: untag); its measurements follow.
  function tag(phase) {
    const vp = api.active(), here = vp && api.position(vp);
    if (!here) return;
    const key = `${here.uid}:${here.frame}`;
    if (phases.get(key) === phase) phases.delete(key); else phases.set(key, phase);
    for (const m of measurements) if (m.uid === here.uid && m.frame === here.frame) m.phase = phaseOf(m.uid, m.frame);
    message(phases.has(key) ? t("Frame {n} tagged {phase}.", { n: here.frame + 1, phase: t(PHASE_NAMES[phase]) })
      : t("Frame {n}: its tag removed.", { n: here.frame + 1 }));
    render(); redraw();
  }

  if (editable) {
    $("tag-ed").addEventListener("click", () => tag("ED"));
    $("tag-es").addEventListener("click", () => tag("ES"));
    $("tool").addEventListener("change", () => {
      clearPending(); message("");
      document.querySelectorAll(".viewport").forEach((el) => el.classList.toggle("measuring", tool() !== "none"));
    });
  }

  // A traced envelope or a clicked outline ends when the user says so (at least three points).
  function endTrace() {
    if (!TRACED.has(tool()) || !pending.vp) return false;
    if (pending.points.length < 3) {
      message(tool() === "area" ? t("Click at least three points around the outline.") : t("Trace at least three points along the envelope."));
      return true;
    }
    finish(pending.vp);
    return true;
  }
  document.addEventListener("dblclick", (e) => {
    if (e.target instanceof HTMLCanvasElement && endTrace()) e.preventDefault();
  });

  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement) return;
    if (e.key === "Enter" && endTrace()) e.preventDefault();
    else if (e.key === "Escape") clearPending();
    else if ((e.key === "Delete" || e.key === "Backspace") && selected && editable) { e.preventDefault(); remove(selected); }
    else if ((e.ctrlKey || e.metaKey) && e.key === "z" && editable && measurements.length) {
      remove(measurements[measurements.length - 1]);
    }
  });

  const copy = (c) => JSON.parse(JSON.stringify(c));
  window.measureApi = {
    measurements: () => measurements,
    planned: () => measurements, // what a plan keeps: every kind, its SR codes them all
    calibrations: () => calibrations.map(copy),
    phases: () => phases, // "uid:frame" -> "ED" | "ES": the ECG strip marks them
    calibration() {
      const vp = api.active(), here = vp && api.position(vp);
      const found = here && applicable(here.uid, here.frame); // none where none applies
      return found ? copy(found) : null;
    },
    lastLength: () => [...measurements].reverse().find((x) => x.kind === "length" && x.unit === "mm"),
    pending: () => pending.points.length,
    selected: () => selected,
    load(content) {
      measurements.length = 0; calibrations.length = 0; selected = null; note = "";
      phases.clear(); // a plan's tags are its own
      clearPending();
      for (const c of content.calibrations || []) {
        if (c && c.scope && Array.isArray(c.points) && Number.isInteger(c.id)) calibrations.push(copy(c));
      }
      lastId = Math.max(lastId, 0, ...calibrations.map((c) => c.id));
      const legacy = content.calibration; // one calibration for everything, before scopes
      if (legacy && !calibrations.length) {
        const series = legacy.uid && api.seriesOf(legacy.uid);
        const known = legacy.french !== undefined ? { french: legacy.french } : { mm: legacy.mm };
        if (series) {
          calibrations.push({ id: ++lastId, points: legacy.points, ...known,
            scope: { kind: "series", series, uid: legacy.uid, frame: legacy.frame || 0 } });
        } else {
          note = t("A calibration saved with this plan was not restored: the image it was drawn on is not recorded. Calibrate again before measuring.");
        }
      }
      for (const m of content.measurements || []) {
        measurements.push({ calibration_id: null, ...copy(m) });
        if (m.phase) phases.set(`${m.uid}:${m.frame}`, m.phase);
      }
      for (const c of calibrations) geometry(c.scope.uid);
      render(); redraw();
    },
  };
  render();
})();
