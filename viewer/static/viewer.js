// Cine viewer: every frame of a clip is prefetched as an <img> (immutable
// URLs, so the browser cache serves replays) and drawn on a canvas at the
// clip's own timing (Frame Time Vector / Frame Time / Cine Rate, from /meta).
"use strict";

const $ = (id) => document.getElementById(id);
const { t, fmt } = window;
const viewports = [];
let active = 0;

function makeViewport(element) {
  const canvas = element.querySelector("canvas");
  const vp = {
    element, canvas, ctx: canvas.getContext("2d"), overlay: element.querySelector(".overlay"),
    clip: null, times: [], frame: 0, playing: false, acc: 0, last: 0, meta: null,
    zoom: 1, panX: 0, panY: 0, brightness: 1, contrast: 1, invert: false,
  };
  element.addEventListener("mousedown", () => select(viewports.indexOf(vp)));
  dragHandlers(vp);
  return vp;
}

function select(index) {
  active = index;
  viewports.forEach((vp, i) => vp.element.classList.toggle("active", i === index));
  syncControls();
}

async function openSeries(vp, instances) {
  if (vp.clip) vp.clip.close();
  const clip = await window.Clip.open(instances);
  vp.clip = clip;
  vp.meta = clip.meta;
  vp.times = clip.times;
  vp.frame = 0; vp.acc = 0; vp.zoom = 1; vp.panX = vp.panY = 0;
  vp.brightness = vp.contrast = 1; vp.invert = false;
  vp.canvas.width = clip.width;
  vp.canvas.height = clip.height;
  draw(vp);
  vp.playing = clip.count > 1; // auto-play a clip
  vp.last = performance.now();
  syncControls();
}

const count = (vp) => (vp.clip ? vp.clip.count : 0);

function draw(vp) {
  const img = vp.clip && vp.clip.source(vp.frame, vp.window);
  if (!img) return false;
  const { ctx, canvas } = vp;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.filter = `brightness(${vp.brightness}) contrast(${vp.contrast})${vp.invert ? " invert(1)" : ""}`;
  ctx.setTransform(vp.zoom, 0, 0, vp.zoom,
    vp.panX + (1 - vp.zoom) * canvas.width / 2, vp.panY + (1 - vp.zoom) * canvas.height / 2);
  ctx.drawImage(img, 0, 0);
  ctx.filter = "none";
  for (const overlay of window.viewerOverlays || []) overlay(vp, ctx);
  const m = vp.meta;
  vp.overlay.textContent = `${m.pseudonym} · ${m.sex} ${m.age} ${m.weight ? m.weight + " " + t("kg") : ""}` +
    ` · ${m.modality} ${m.view} · ${t("frame {n}", { n: `${vp.frame + 1}/${count(vp)}` })} · ${m.fps} ${t("fps")}`;
  return true;
}

function tick(now) {
  for (const vp of viewports) {
    if (!vp.playing || !vp.clip || vp.clip.count < 2) { vp.last = now; continue; }
    vp.acc += (now - vp.last) * Number($("speed").value);
    vp.last = now;
    let moved = false;
    while (vp.acc >= vp.times[vp.frame]) {
      const next = vp.frame + 1;
      if (!vp.clip.ready(next % vp.clip.count)) {
        vp.acc = vp.times[vp.frame]; // wait for the network, then go on at the clip's pace
        break;
      }
      vp.acc -= vp.times[vp.frame];
      if (next >= count(vp) && !$("loop").checked) { vp.playing = false; break; }
      vp.frame = next % count(vp);
      moved = true;
    }
    if (moved) draw(vp);
  }
  syncControls();
  requestAnimationFrame(tick);
}

function syncControls() {
  const vp = viewports[active];
  if (!vp) return;
  $("scrub").max = Math.max(count(vp), 1);
  $("scrub").value = vp.frame + 1;
  $("counter").textContent = `${count(vp) ? vp.frame + 1 : 0} / ${count(vp)}`;
  $("play").classList.toggle("on", vp.playing);
}

function step(delta) {
  const vp = viewports[active];
  if (!count(vp)) return;
  vp.playing = false;
  vp.frame = (vp.frame + delta + count(vp)) % count(vp);
  draw(vp);
}

function dragHandlers(vp) {
  let start = null;
  vp.canvas.addEventListener("mousedown", (e) => {
    if (window.planningTool && window.planningTool() !== "none") return; // a measuring click
    start = { x: e.clientX, y: e.clientY, b: vp.brightness, c: vp.contrast, px: vp.panX, py: vp.panY, pan: e.shiftKey };
  });
  window.addEventListener("mouseup", () => { start = null; });
  window.addEventListener("mousemove", (e) => {
    if (!start) return;
    const dx = e.clientX - start.x, dy = e.clientY - start.y;
    if (start.pan || !(vp.meta && vp.meta.grey)) { vp.panX = start.px + dx; vp.panY = start.py + dy; }
    else { // window/level: width with x, level with y
      vp.contrast = Math.max(0.1, start.c * Math.exp(dx / 200));
      vp.brightness = Math.max(0.1, start.b * Math.exp(-dy / 200));
    }
    draw(vp);
  });
}

function bindControls() {
  $("play").onclick = () => { const vp = viewports[active]; vp.playing = !vp.playing; vp.last = performance.now(); };
  $("prev").onclick = () => step(-1);
  $("next").onclick = () => step(1);
  $("scrub").oninput = (e) => { const vp = viewports[active]; vp.playing = false; vp.frame = Number(e.target.value) - 1; draw(vp); };
  $("preset").onchange = (e) => {
    const vp = viewports[active];
    [vp.brightness, vp.contrast] = e.target.value.split(",").map(Number);
    draw(vp);
  };
  $("invert").onclick = () => { const vp = viewports[active]; vp.invert = !vp.invert; draw(vp); };
  $("fit").onclick = () => { const vp = viewports[active]; vp.zoom = 1; vp.panX = vp.panY = 0; draw(vp); };
  $("help").onclick = () => { $("keys").hidden = !$("keys").hidden; };
  $("split").onclick = () => {
    if (viewports.length > 1) return;
    const element = viewports[0].element.cloneNode(true);
    $("viewports").appendChild(element);
    viewports.push(makeViewport(element));
    select(1);
  };
  const thumbs = [...document.querySelectorAll("#series .thumb")];
  thumbs.forEach((button) => {
    button.onclick = () => openSeries(viewports[active], button.dataset.instances.split(" "));
  });
  document.addEventListener("keydown", (e) => {
    const vp = viewports[active];
    const keys = {
      " ": () => { vp.playing = !vp.playing; vp.last = performance.now(); },
      ArrowLeft: () => step(-1), ArrowRight: () => step(1),
      ArrowUp: () => moveSeries(thumbs, -1), ArrowDown: () => moveSeries(thumbs, 1),
      "+": () => { vp.zoom *= 1.25; draw(vp); }, "=": () => { vp.zoom *= 1.25; draw(vp); },
      "-": () => { vp.zoom /= 1.25; draw(vp); },
      Home: () => { vp.zoom = 1; vp.panX = vp.panY = 0; draw(vp); },
      End: () => { vp.playing = false; vp.frame = count(vp) - 1; draw(vp); },
      i: () => { vp.invert = !vp.invert; draw(vp); },
      "?": () => { $("keys").hidden = !$("keys").hidden; },
      Escape: () => { $("keys").hidden = true; },
    };
    if (keys[e.key] && !(e.target instanceof HTMLInputElement)) { e.preventDefault(); keys[e.key](); }
  });
}

let seriesIndex = 0;
function moveSeries(thumbs, delta) {
  if (!thumbs.length) return;
  seriesIndex = (seriesIndex + delta + thumbs.length) % thumbs.length;
  thumbs[seriesIndex].click();
}

viewports.push(makeViewport(document.querySelector(".viewport")));
select(0);
bindControls();
// For planning.js: the viewports, the active one, and image coordinates of a click.
window.viewerApi = {
  viewports, draw, active: () => viewports[active],
  toImage(vp, event) {
    const rect = vp.canvas.getBoundingClientRect();
    const cx = (event.clientX - rect.left) * vp.canvas.width / rect.width;
    const cy = (event.clientY - rect.top) * vp.canvas.height / rect.height;
    const tx = vp.panX + (1 - vp.zoom) * vp.canvas.width / 2;
    const ty = vp.panY + (1 - vp.zoom) * vp.canvas.height / 2;
    return [(cx - tx) / vp.zoom, (cy - ty) / vp.zoom];
  },
};
window.viewerState = () => viewports.map((vp) => ({ frame: vp.frame, frames: count(vp), playing: vp.playing, invert: vp.invert, contrast: vp.contrast }));
const firstThumb = document.querySelector("#series .thumb");
if (firstThumb) firstThumb.click();
requestAnimationFrame(tick);
