// Measurements and calibrations on the viewports. Values are computed by the
// server (one calibration implementation, with its source); this file draws
// the lines and keeps the list. planning.js (the worksheet) reads them
// through window.measureApi.
"use strict";

(() => {
  const api = window.viewerApi;
  const { t, fmt } = window;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const measurements = []; // {uid, frame, kind, points, value, unit, source}
  let pending = [];
  const NEEDED = { length: 2, angle: 3, ellipse: 2, calibrate: 2, "calibrate-length": 2 };
  window.planningTool = () => $("tool").value;

  window.viewerOverlays = [(vp, ctx) => {
    if (!vp.meta) return;
    ctx.strokeStyle = "#4f4"; ctx.fillStyle = "#4f4"; ctx.lineWidth = 2 / vp.zoom;
    ctx.font = `${14 / vp.zoom}px sans-serif`;
    const shown = measurements.filter((m) => m.uid === vp.meta.uid && m.frame === vp.frame);
    for (const m of shown.concat(pending.length ? [{ points: pending, kind: "pending" }] : [])) {
      ctx.beginPath();
      if (m.kind === "ellipse") {
        const [[cx, cy], [ex, ey]] = m.points;
        ctx.ellipse(cx, cy, Math.abs(ex - cx), Math.abs(ey - cy), 0, 0, 2 * Math.PI);
      } else {
        m.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      }
      ctx.stroke();
      if (m.value !== undefined) {
        const [x, y] = m.points[m.points.length - 1];
        ctx.fillText(`${m.value.toFixed(1)} ${m.unit}`, x + 4 / vp.zoom, y - 4 / vp.zoom);
      }
    }
  }];

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    return [response.status, await response.json()];
  }

  let userCalibration = null;
  function showCalibration() {
    $("calibration").textContent = userCalibration.french
      ? t("calibrated on a {n}F catheter", { n: userCalibration.french })
      : t("calibrated on a known length of {n} mm", { n: userCalibration.mm });
  }
  let dragging = null; // {measurement, index} while an end point is moved
  let justDragged = false;

  function nearEnd(vp, point) {
    const reach = 8 / vp.zoom;
    for (const m of measurements) {
      if (m.uid !== vp.meta.uid || m.frame !== vp.frame) continue;
      const index = m.points.findIndex(([x, y]) => Math.hypot(x - point[0], y - point[1]) <= reach);
      if (index >= 0) return { measurement: m, index };
    }
    return null;
  }

  async function remeasure(m) {
    const [status, result] = await post(`/api/instances/${m.uid}/measure`,
      { kind: m.kind, points: m.points, calibration: userCalibration });
    if (status === 200) Object.assign(m, result);
    render();
    api.viewports.forEach(api.draw);
  }

  // Editing: drag an end point of a drawn measurement; it is measured again.
  document.querySelector(".viewports").addEventListener("mousedown", (event) => {
    const vp = api.active();
    if ($("tool").value === "none" || !vp.meta || event.target.tagName !== "CANVAS") return;
    dragging = nearEnd(vp, api.toImage(vp, event));
  });
  window.addEventListener("mousemove", (event) => {
    if (!dragging) return;
    const vp = api.active();
    dragging.measurement.points[dragging.index] = api.toImage(vp, event);
    justDragged = true;
    api.draw(vp);
  });
  window.addEventListener("mouseup", () => {
    if (dragging && justDragged) remeasure(dragging.measurement);
    dragging = null;
  });

  document.querySelector(".viewports").addEventListener("click", async (event) => {
    const tool = $("tool").value;
    const vp = api.active();
    if (justDragged) { justDragged = false; return; }
    if (tool === "none" || !vp.meta || event.target.tagName !== "CANVAS") return;
    if (nearEnd(vp, api.toImage(vp, event))) return; // a click on an end point edits, not draws
    vp.playing = false;
    pending.push(api.toImage(vp, event));
    api.draw(vp);
    if (pending.length < NEEDED[tool]) return;
    const points = pending; pending = [];
    if (tool === "calibrate" || tool === "calibrate-length") {
      userCalibration = tool === "calibrate"
        ? { points, french: Number($("french").value) } : { points, mm: Number($("known-mm").value) };
      showCalibration();
      api.draw(vp);
      return;
    }
    const [status, result] = await post(`/api/instances/${vp.meta.uid}/measure`,
      { kind: tool, points, calibration: userCalibration });
    if (status !== 200) { alert(result.message); api.draw(vp); return; }
    measurements.push({ uid: vp.meta.uid, frame: vp.frame, kind: tool, points, ...result });
    render();
    api.draw(vp);
  });

  function render() {
    $("measurements").innerHTML = "";
    measurements.forEach((m, index) => {
      const item = document.createElement("li");
      item.textContent = `${t(m.kind)} ${m.value.toFixed(1)} ${m.unit} (${t("frame {n}", { n: m.frame + 1 })}; ${m.source}) `;
      if (m.unit === "px") item.classList.add("warning");
      const remove = document.createElement("button");
      remove.textContent = t("Delete");
      remove.onclick = () => { measurements.splice(index, 1); render(); api.viewports.forEach(api.draw); };
      item.appendChild(remove);
      $("measurements").appendChild(item);
    });
  }

  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && measurements.length) {
      measurements.pop(); render(); api.viewports.forEach(api.draw);
    }
  });

  // For planning.js: what was measured, and the calibration in use.
  window.measureApi = {
    measurements: () => measurements,
    calibration: () => userCalibration,
    lastLength: () => [...measurements].reverse().find((x) => x.kind === "length" && x.unit === "mm"),
    load(content) {
      measurements.push(...(content.measurements || []));
      if (content.calibration) { userCalibration = content.calibration; showCalibration(); }
      render();
      api.viewports.forEach(api.draw);
    },
  };
})();
