// Cine viewer: clips come from clip.js (Clip.open) and are drawn on a canvas
// at the clip's own timing. One geometry per viewport maps image pixels to
// the page (fit, zoom, pan, letterbox, device pixel ratio): draw() paints
// through it and pointer events are read back through its inverse, so the
// point a click records is the pixel drawn under it, in every viewport.
"use strict";

const $ = (id) => document.getElementById(id);
const { t, fmt } = window;
const viewports = [];
const thumbs = [...document.querySelectorAll("#series .thumb")];
const ZOOM = { step: 1.25, min: 0.1, max: 32 };
// The magnifier ("m"): a lens of LENS.radius CSS pixels under the pointer
// showing the image LENS.power times larger, a cross at its centre.
const LENS = { radius: 70, power: 3 };
let magnifying = false;
let active = 0;

function makeViewport(element) {
  const canvas = element.querySelector("canvas");
  const vp = {
    element, canvas, ctx: canvas.getContext("2d"), overlay: element.querySelector(".overlay"),
    clip: null, meta: null, uids: [], stack: false, series: null, thumb: null, chosen: null, opening: 0,
    times: [], frame: 0, playing: false, acc: 0, last: 0,
    zoom: 1, panX: 0, panY: 0, brightness: 1, contrast: 1, invert: false,
  };
  element.addEventListener("pointerdown", () => select(viewports.indexOf(vp)));
  pointerHandlers(vp);
  new ResizeObserver(() => draw(vp)).observe(canvas); // window resized, split opened
  return vp;
}

function select(index) {
  active = index;
  viewports.forEach((vp, i) => vp.element.classList.toggle("active", i === index));
  thumbs.forEach((b) => b.classList.toggle("current", b === viewports[index].thumb));
  syncControls();
}

// The image-to-page transform of a viewport, in CSS pixels:
//   page = box corner + (x, y) + image point × scale
// The image is fitted into the canvas box (letterboxed, centred), then
// zoomed about the box centre and panned. null before a clip is open.
function geometry(vp) {
  if (!vp.clip) return null;
  const box = vp.canvas.getBoundingClientRect();
  if (!box.width || !box.height) return null;
  const { width, height } = vp.clip;
  const scale = Math.min(box.width / width, box.height / height) * vp.zoom;
  return {
    box, scale,
    x: (box.width - width * scale) / 2 + vp.panX,
    y: (box.height - height * scale) / 2 + vp.panY,
  };
}

function toScreen(vp, [x, y]) {
  const g = geometry(vp);
  return g && [g.box.left + g.x + x * g.scale, g.box.top + g.y + y * g.scale];
}

// Image coordinates (continuous: pixel i spans [i, i + 1)) of a page point.
function toImage(vp, clientX, clientY) {
  if (typeof clientX === "object") ({ clientX, clientY } = clientX); // an event
  const g = geometry(vp);
  return g && [(clientX - g.box.left - g.x) / g.scale, (clientY - g.box.top - g.y) / g.scale];
}

// The instance and frame on screen: a run's frame, or one image of a stack.
function position(vp) {
  if (!vp.meta) return null;
  return vp.stack ? { uid: vp.uids[vp.frame], frame: 0 } : { uid: vp.meta.uid, frame: vp.frame };
}

async function openSeries(vp, thumb) {
  const uids = thumb.dataset.instances.split(" ");
  const token = ++vp.opening;
  vp.chosen = thumb; // where ↑/↓ go on from, even before it has opened
  if (vp.clip) vp.clip.close();
  let clip;
  try {
    clip = await window.Clip.open(uids);
  } catch (error) {
    if (token === vp.opening) vp.overlay.textContent = t("This series could not be opened.");
    return;
  }
  if (token !== vp.opening) { clip.close(); return; } // another series was chosen meanwhile
  Object.assign(vp, {
    clip, meta: clip.meta, times: clip.times, uids, series: thumb.dataset.series, thumb,
    compared: thumb.dataset.compared || null, // another study's series, set beside this one
    stack: uids.length > 1 && clip.count === uids.length && clip.meta.frames <= 1,
    frame: 0, acc: 0, zoom: 1, panX: 0, panY: 0, brightness: 1, contrast: 1, invert: false,
    loaded: false,
    range: null, beat: null,
  });
  // Every frame arrived: what viewerState says, so a check of the playing
  // rate need not count the waits for frames still on their way.
  clip.loaded.then(() => { if (vp.clip === clip) vp.loaded = true; }, () => {});
  select(viewports.indexOf(vp));
  draw(vp);
  vp.playing = clip.count > 1 && !vp.stack; // auto-play a run; a stack of images waits
  vp.last = performance.now();
  syncControls();
}

const count = (vp) => (vp.clip ? vp.clip.count : 0);

// Window/level as the clip wants it: a window for clips that apply it to
// stored values, else brightness/contrast as a canvas filter on 8 bits.
function display(vp) {
  if (!vp.clip.windowing) return undefined;
  const base = vp.clip.defaultWindow || { center: 128, width: 256 };
  return {
    center: base.center - ((vp.brightness - 1) * base.width) / 2,
    width: base.width / vp.contrast,
    invert: vp.invert,
  };
}

function draw(vp) {
  const g = geometry(vp);
  const img = g && vp.clip.source(vp.frame, display(vp));
  if (!img) return false;
  const { ctx, canvas } = vp;
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(g.box.width * dpr));
  const height = Math.max(1, Math.round(g.box.height * dpr));
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const sx = width / g.box.width, sy = height / g.box.height; // backing pixels per CSS pixel
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  if (!vp.clip.windowing) ctx.filter = filterOf(vp);
  ctx.setTransform(sx * g.scale, 0, 0, sy * g.scale, sx * g.x, sy * g.y);
  ctx.drawImage(img, 0, 0, vp.clip.width, vp.clip.height);
  ctx.filter = "none";
  // Overlays in CSS pixels of the box, so lines and text keep their size.
  ctx.setTransform(sx, 0, 0, sy, 0, 0);
  const view = { scale: g.scale, width: g.box.width, height: g.box.height,
    point: ([x, y]) => [g.x + x * g.scale, g.y + y * g.scale] };
  for (const overlay of window.viewerOverlays || []) overlay(vp, ctx, view);
  if (magnifying && vp.lens) lens(vp, img, g, sx, sy);
  if (vp === viewports[active]) showWindow(); // dragged or chosen: the numbers follow
  const m = vp.meta;
  vp.overlay.textContent = `${m.pseudonym} · ${m.sex} ${m.age} ${m.weight ? m.weight + " " + t("kg") : ""}` +
    ` · ${m.modality} ${m.view} · ` + (vp.stack ? t("image {n}", { n: `${vp.frame + 1}/${count(vp)}` })
      : `${t("frame {n}", { n: `${vp.frame + 1}/${count(vp)}` })} · ${rate(m.fps)} ${t("fps")}`) +
    (vp.compared ? ` · ${vp.compared}` : "");
  return true;
}

// Brightness/contrast as a canvas filter, for clips that do not window themselves.
const filterOf = (vp) => `brightness(${vp.brightness}) contrast(${vp.contrast})${vp.invert ? " invert(1)" : ""}`;

// The magnifier's lens at vp.lens (CSS pixels in the box): the image drawn
// LENS.power times larger about that point, clipped to a circle.
function lens(vp, img, g, sx, sy) {
  const { ctx } = vp;
  const [px, py] = vp.lens;
  const k = LENS.power;
  ctx.save();
  ctx.setTransform(sx, 0, 0, sy, 0, 0);
  ctx.beginPath(); ctx.arc(px, py, LENS.radius, 0, 2 * Math.PI); ctx.clip();
  ctx.fillStyle = "#000"; ctx.fillRect(px - LENS.radius, py - LENS.radius, 2 * LENS.radius, 2 * LENS.radius);
  if (!vp.clip.windowing) ctx.filter = filterOf(vp);
  ctx.imageSmoothingEnabled = false; // pixels as pixels, to place a caliper on
  ctx.setTransform(sx * g.scale * k, 0, 0, sy * g.scale * k, sx * (px - (px - g.x) * k), sy * (py - (py - g.y) * k));
  ctx.drawImage(img, 0, 0, vp.clip.width, vp.clip.height);
  ctx.restore();
  ctx.save();
  ctx.setTransform(sx, 0, 0, sy, 0, 0);
  ctx.strokeStyle = "#fd4"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.arc(px, py, LENS.radius, 0, 2 * Math.PI);
  ctx.moveTo(px - 8, py); ctx.lineTo(px + 8, py); ctx.moveTo(px, py - 8); ctx.lineTo(px, py + 8);
  ctx.stroke();
  ctx.restore();
}

// Frames per second in the page's locale (30,03 in Russian), whole when whole.
const rate = (fps) => fmt(fps, Number.isInteger(fps) ? 0 : 2);

function tick(now) {
  for (const vp of viewports) {
    // A viewport in step is moved by its leader (compare.js), not its clock.
    if (!vp.playing || vp.following || !vp.clip || vp.clip.count < 2) { vp.last = now; continue; }
    vp.acc += (now - vp.last) * Number($("speed").value);
    vp.last = now;
    let moved = false;
    // Played within the frames of one beat when ecg.js trims the run to one.
    const [first, last] = vp.range || [0, count(vp) - 1];
    while (vp.acc >= vp.times[vp.frame]) {
      const over = vp.frame + 1 > last || vp.frame + 1 < first;
      const next = over ? first : vp.frame + 1;
      if (!vp.clip.ready(next)) {
        vp.acc = vp.times[vp.frame]; // wait for the network, then go on at the clip's pace
        break;
      }
      vp.acc -= vp.times[vp.frame];
      if (over && !$("loop").checked) { vp.playing = false; break; }
      vp.frame = next;
      moved = true;
    }
    if (moved) draw(vp);
  }
  if (window.viewerSync) window.viewerSync();
  syncControls();
  requestAnimationFrame(tick);
}

// The W/L presets of the shown image's modality (and "As sent"); the
// chosen one goes back to "As sent" when it is not one of them.
function presetsFor(vp) {
  const modality = vp && vp.meta ? vp.meta.modality : null;
  for (const option of $("preset").options) {
    option.hidden = Boolean(option.dataset.modality) && option.dataset.modality !== modality;
  }
  if ($("preset").selectedOptions[0] && $("preset").selectedOptions[0].hidden) $("preset").value = "1,1";
}

// The stack's images by number, to go straight to one (a run's frames are
// the slider's); hidden for a run.
function instancePicker(vp) {
  const pick = $("instance");
  $("instance-picker").hidden = !vp.stack;
  if (!vp.stack) return;
  if (pick.dataset.series !== vp.series || pick.options.length !== vp.uids.length) {
    pick.replaceChildren(...vp.uids.map((uid, i) => new Option(`${i + 1} / ${vp.uids.length}`, String(i))));
    pick.dataset.series = vp.series;
  }
  if (document.activeElement !== pick) pick.value = String(vp.frame);
}

function syncControls() {
  const vp = viewports[active];
  if (!vp) return;
  presetsFor(vp);
  instancePicker(vp);
  $("scrub").max = Math.max(count(vp), 1);
  $("scrub").value = vp.frame + 1;
  $("counter").textContent = `${count(vp) ? vp.frame + 1 : 0} / ${count(vp)}`;
  showWindow();
  $("play").classList.toggle("on", vp.playing);
}

function step(delta) {
  const vp = viewports[active];
  if (!count(vp)) return;
  vp.playing = false;
  vp.frame = (vp.frame + delta + count(vp)) % count(vp);
  draw(vp);
}

// Zoom by k keeping the image point at (mx, my), CSS pixels from the box
// centre, where it is: the centre for keys and buttons.
function zoomBy(vp, k, mx = 0, my = 0) {
  const zoom = Math.min(ZOOM.max, Math.max(ZOOM.min, vp.zoom * k));
  const applied = zoom / vp.zoom;
  vp.panX = mx - (mx - vp.panX) * applied;
  vp.panY = my - (my - vp.panY) * applied;
  vp.zoom = zoom;
  draw(vp);
}

function fit(vp) { vp.zoom = 1; vp.panX = vp.panY = 0; draw(vp); }

// Pointer events (fractional coordinates, unlike mouse events) on a canvas:
// a measuring tool (window.viewerTool, measure.js) gets the image point
// first; otherwise, or with shift, a drag pans or sets window/level.
function pointerHandlers(vp) {
  const { canvas } = vp;
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !vp.clip) return;
    select(viewports.indexOf(vp));
    const tool = window.viewerTool;
    if (!e.shiftKey && tool && tool.down(vp, toImage(vp, e.clientX, e.clientY), e)) drag = { tool };
    else {
      drag = { x: e.clientX, y: e.clientY, b: vp.brightness, c: vp.contrast, px: vp.panX, py: vp.panY,
        pan: e.shiftKey || !(vp.meta && vp.meta.grey) };
    }
    canvas.setPointerCapture(e.pointerId);
    e.preventDefault(); // no text selection; the keys go to the viewport, not a control clicked before
    vp.element.focus({ preventScroll: true });
  });
  canvas.addEventListener("pointermove", (e) => {
    if (magnifying) { // the lens follows the pointer
      const box = canvas.getBoundingClientRect();
      vp.lens = [e.clientX - box.left, e.clientY - box.top];
      if (!drag) draw(vp);
    }
    if (!drag) return;
    if (drag.tool) { drag.tool.move(vp, toImage(vp, e.clientX, e.clientY), e); return; }
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.pan) { vp.panX = drag.px + dx; vp.panY = drag.py + dy; }
    else { // window/level: width with x, level with y
      vp.contrast = Math.max(0.1, drag.c * Math.exp(dx / 200));
      vp.brightness = Math.max(0.1, drag.b * Math.exp(-dy / 200));
    }
    draw(vp);
  });
  const end = (e) => {
    if (drag && drag.tool) drag.tool.up(vp, toImage(vp, e.clientX, e.clientY), e);
    drag = null;
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointerleave", () => { if (vp.lens) { vp.lens = null; draw(vp); } });
  canvas.addEventListener("pointercancel", end);
  // The wheel steps frames (as on an echo station); with Ctrl, it zooms
  // about the pointer.
  canvas.addEventListener("wheel", (e) => {
    if (!vp.clip || !e.deltaY) return;
    e.preventDefault();
    select(viewports.indexOf(vp));
    if (e.ctrlKey || e.metaKey) {
      const box = canvas.getBoundingClientRect();
      zoomBy(vp, e.deltaY < 0 ? ZOOM.step : 1 / ZOOM.step,
        e.clientX - box.left - box.width / 2, e.clientY - box.top - box.height / 2);
    } else step(e.deltaY > 0 ? 1 : -1);
    syncControls();
  }, { passive: false });
}

// Window centre and width as numbers: of the stored values where the clip
// windows them itself, else of the 8-bit picture (the canvas filter's
// brightness b and contrast c are the window centre 127.5 / b, width
// 255 / (b c)).
function windowOf(vp) {
  if (!vp.clip) return null;
  const d = display(vp);
  if (d) return { center: d.center, width: d.width };
  return { center: 127.5 / vp.brightness, width: 255 / (vp.brightness * vp.contrast) };
}

function setWindow(vp, center, width) {
  if (!vp.clip || !(width > 0) || !Number.isFinite(center)) return;
  if (vp.clip.windowing) {
    const base = vp.clip.defaultWindow || { center: 128, width: 256 };
    vp.contrast = base.width / width;
    vp.brightness = 1 - (2 * (center - base.center)) / base.width;
  } else {
    vp.brightness = 127.5 / center;
    vp.contrast = 255 / (width * vp.brightness);
  }
  draw(vp);
}

function showWindow() {
  if (!$("wl-center")) return;
  const found = windowOf(viewports[active]);
  if (!found || document.activeElement === $("wl-center") || document.activeElement === $("wl-width")) return;
  $("wl-center").value = Math.round(found.center);
  $("wl-width").value = Math.round(found.width);
}

// The second viewport, made on first asking.
function split() {
  if (viewports.length === 1) {
    const element = viewports[0].element.cloneNode(true);
    element.querySelector(".overlay").textContent = "";
    $("viewports").appendChild(element);
    viewports.push(makeViewport(element));
  }
  select(1);
  return viewports[1];
}

function moveSeries(delta) {
  if (!thumbs.length) return;
  const at = thumbs.indexOf(viewports[active].chosen);
  thumbs[(at + delta + thumbs.length) % thumbs.length].click();
}

// Keys a focused control handles itself are left to it.
function forControl(e) {
  const target = e.target;
  if (target instanceof HTMLInputElement && ["checkbox", "radio"].includes(target.type)) return e.key === " ";
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return true;
  return target instanceof HTMLSelectElement && ["ArrowUp", "ArrowDown", " "].includes(e.key);
}

function bindControls() {
  // A checkbox (its box or its label) or the slider, once used, gives the
  // keys back to the viewer: space plays, ? shows the keys (the keyboard
  // still tabs to them).
  const giveBack = (e) => {
    const target = e.target;
    if (target instanceof HTMLInputElement && ["checkbox", "range"].includes(target.type)) target.blur();
  };
  $("controls-bar").addEventListener("change", giveBack);
  $("controls-bar").addEventListener("pointerup", giveBack);
  $("play").onclick = () => { const vp = viewports[active]; vp.playing = !vp.playing; vp.last = performance.now(); };
  $("prev").onclick = () => step(-1);
  $("next").onclick = () => step(1);
  $("scrub").oninput = (e) => { const vp = viewports[active]; vp.playing = false; vp.frame = Number(e.target.value) - 1; draw(vp); };
  $("preset").onchange = (e) => {
    const vp = viewports[active];
    [vp.brightness, vp.contrast] = e.target.value.split(",").map(Number);
    $("wl-center").blur(); $("wl-width").blur(); // the numbers show the preset
    draw(vp);
  };
  $("invert").onclick = () => { const vp = viewports[active]; vp.invert = !vp.invert; draw(vp); };
  $("instance").onchange = (e) => { const vp = viewports[active]; vp.playing = false; vp.frame = Number(e.target.value); draw(vp); };
  const typed = () => setWindow(viewports[active], Number($("wl-center").value), Number($("wl-width").value));
  $("wl-center").onchange = typed;
  $("wl-width").onchange = typed;
  $("fit").onclick = () => fit(viewports[active]);
  $("help").onclick = () => { $("keys").hidden = !$("keys").hidden; };
  $("split").onclick = split;
  thumbs.forEach((button) => {
    button.onclick = () => openSeries(viewports[active], button);
  });
  document.addEventListener("keydown", (e) => {
    const vp = viewports[active];
    const keys = {
      " ": () => { vp.playing = !vp.playing; vp.last = performance.now(); },
      ArrowLeft: () => step(-1), ArrowRight: () => step(1),
      ArrowUp: () => moveSeries(-1), ArrowDown: () => moveSeries(1),
      "+": () => zoomBy(vp, ZOOM.step), "=": () => zoomBy(vp, ZOOM.step),
      "-": () => zoomBy(vp, 1 / ZOOM.step),
      Home: () => fit(vp),
      End: () => { vp.playing = false; vp.frame = Math.max(count(vp) - 1, 0); draw(vp); },
      i: () => { vp.invert = !vp.invert; draw(vp); },
      m: () => { magnifying = !magnifying; viewports.forEach(draw); },
      "?": () => { $("keys").hidden = !$("keys").hidden; },
      Escape: () => { $("keys").hidden = true; },
    };
    if (keys[e.key] && !forControl(e)) { e.preventDefault(); keys[e.key](); }
  });
}

viewports.push(makeViewport(document.querySelector(".viewport")));
select(0);
bindControls();
// For measure.js, planning.js and tests: the viewports and their geometry.
window.viewerApi = {
  viewports, draw, geometry, toScreen, toImage, position, openSeries, split, count,
  active: () => viewports[active],
  // Where an image stands in its stack of single-frame images: [k, n], 1-based; null in a run.
  stackIndex: (uid) => {
    const thumb = thumbs.find((b) => b.dataset.instances.split(" ").includes(uid));
    const uids = thumb ? thumb.dataset.instances.split(" ") : [];
    return uids.length > 1 ? [uids.indexOf(uid) + 1, uids.length] : null;
  },
  // The series (SeriesInstanceUID) an instance of this study belongs to.
  seriesOf: (uid) => {
    const thumb = thumbs.find((b) => b.dataset.instances.split(" ").includes(uid));
    return thumb ? thumb.dataset.series : null;
  },
  // Bring an instance's frame into the active viewport (its run or stack opened).
  async show(uid, frame = 0) {
    const vp = viewports[active];
    if (!vp.uids.includes(uid)) { // else already open (a compared series too)
      const thumb = thumbs.find((b) => b.dataset.instances.split(" ").includes(uid));
      if (!thumb) return;
      await openSeries(vp, thumb);
    }
    vp.playing = false;
    vp.frame = vp.stack ? vp.uids.indexOf(uid) : Math.min(frame, count(vp) - 1);
    draw(vp);
    syncControls();
  },
};
window.viewerState = () => viewports.map((vp) => ({
  window: windowOf(vp),
  frame: vp.frame, frames: count(vp), playing: vp.playing, invert: vp.invert, contrast: vp.contrast,
  zoom: vp.zoom, panX: vp.panX, panY: vp.panY, uid: vp.meta && vp.meta.uid, series: vp.series,
  thumb: thumbs.indexOf(vp.thumb), loaded: Boolean(vp.loaded),
  compared: vp.compared, following: Boolean(vp.following), range: vp.range || null,
  lens: magnifying ? vp.lens || null : null,
}));
if (thumbs.length) thumbs[0].click();
requestAnimationFrame(tick);
