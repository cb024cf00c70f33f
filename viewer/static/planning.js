// Measurements and the closure-planning worksheet. Values are computed by the
// server (one calibration implementation, with its source); this file draws
// the lines, keeps the list, fills worksheet slots and saves plan versions.
"use strict";

(() => {
  const api = window.viewerApi;
  const t = (text, values = {}) => Object.entries(values).reduce(
    (out, [key, value]) => out.replaceAll(`{${key}}`, value), (window.I18N || {})[text] || text);
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const study = document.body.dataset.study;
  const measurements = []; // {uid, frame, kind, points, value, unit, source}
  let pending = [];
  const NEEDED = { length: 2, angle: 3, ellipse: 2, calibrate: 2, "calibrate-length": 2 };
  const SLOTS = {
    "secundum ASD": [["ASD-MAX-DIAMETER", "ASD maximal diameter (view 1)"],
      ["ASD-MAX-DIAMETER-2", "ASD maximal diameter (view 2)"], ["ASD-SEPTAL-LENGTH", "Total septal length"],
      ["ASD-STRETCHED", "Stretched (balloon) diameter"]],
    PDA: [["PDA-NARROWEST", "Narrowest (pulmonary end) diameter"], ["PDA-AMPULLA", "Aortic ampulla diameter"],
      ["PDA-LENGTH", "Duct length"]],
    "perimembranous VSD": [["VSD-LV-DIAMETER", "LV-side diameter"], ["VSD-RV-DIAMETER", "RV-side diameter"],
      ["VSD-AORTIC-DISTANCE", "Distance to the aortic valve"]],
    "muscular VSD": [["VSD-LV-DIAMETER", "LV-side diameter"], ["VSD-RV-DIAMETER", "RV-side diameter"]],
  };
  const RIMS = ["aortic", "SVC", "IVC", "posterior", "AV-valve"];
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

  function slotsForm() {
    const defect = $("defect").value;
    $("slots").innerHTML = "";
    for (const [code, meaning] of SLOTS[defect]) {
      const row = document.createElement("label");
      row.innerHTML = `${t(meaning)} <input data-code="${code}" data-meaning="${meaning}" type="number" step="0.1" min="0"> ${t("mm")} `;
      const use = document.createElement("button");
      use.type = "button"; use.textContent = t("use last measurement");
      use.onclick = () => {
        const last = [...measurements].reverse().find((m) => m.kind === "length" && m.unit === "mm");
        if (!last) return;
        const input = row.querySelector("input");
        input.value = last.value.toFixed(1);
        input.dataset.uid = last.uid; input.dataset.frame = last.frame + 1;
      };
      row.appendChild(use);
      $("slots").appendChild(row);
    }
    $("rims").hidden = defect !== "secundum ASD";
    if (defect === "PDA") {
      const row = document.createElement("label");
      row.innerHTML = `${t("Krichenko type")} <select id="krichenko"><option></option>` +
        ["A", "B", "C", "D", "E"].map((k) => `<option>${k}</option>`).join("") + "</select>";
      $("slots").appendChild(row);
    }
  }

  $("rims").innerHTML = RIMS.map((r) => `<label>${t("{rim} rim", { rim: t(r) })} <input data-rim="${r}" type="number" step="0.1" min="0"> ${t("mm")}</label>`).join(" ");
  $("defect").onchange = slotsForm;
  slotsForm();

  async function reopen() {
    const versions = await (await fetch(`/api/studies/${study}/plans`)).json();
    if (!versions.length) return;
    const latest = versions[versions.length - 1];
    measurements.push(...(latest.content.measurements || []));
    if (latest.content.calibration) {
      userCalibration = latest.content.calibration;
      showCalibration();
    }
    $("defect").value = latest.defect;
    slotsForm();
    for (const slot of latest.content.slots) {
      const input = document.querySelector(`#slots input[data-code="${slot.code}"]`);
      if (input) { input.value = slot.value_mm; input.dataset.uid = slot.instance_uid || ""; input.dataset.frame = slot.frame || ""; }
    }
    for (const [rim, value] of Object.entries(latest.content.rims)) {
      const input = document.querySelector(`#rims input[data-rim="${rim}"]`);
      if (input) input.value = value;
    }
    $("note").value = latest.content.note;
    $("plan-version").textContent = t("Plan version {version} by {author}, {when}",
      { version: latest.version, author: latest.author, when: latest.created_at });
    render();
    api.viewports.forEach(api.draw);
  }
  reopen();

  $("save-plan").onclick = async () => {
    const slots = [...document.querySelectorAll("#slots input")].filter((i) => i.value !== "").map((i) => ({
      code: i.dataset.code, meaning: i.dataset.meaning, value_mm: Number(i.value),
      instance_uid: i.dataset.uid || null, frame: i.dataset.frame ? Number(i.dataset.frame) : null,
    }));
    const rims = {};
    document.querySelectorAll("#rims input").forEach((i) => { if (i.value !== "") rims[i.dataset.rim] = Number(i.value); });
    const krichenko = $("krichenko") ? $("krichenko").value : "";
    const [status, plan] = await post(`/api/studies/${study}/plans`,
      { defect: $("defect").value, slots, rims, note: $("note").value, measurements, krichenko,
        calibration: userCalibration });
    if (status !== 201) { $("plan-result").textContent = plan.message; return; }
    const p = plan.proposal;
    $("plan-result").innerHTML = "";
    const lines = [t("Saved as version {n} (report series stored).", { n: plan.version })];
    if (plan.deficient_rims.length) {
      lines.push(t("Deficient rims (< 5 mm): {rims}", { rims: plan.deficient_rims.map(t).join(", ") }));
    }
    if (p) {
      lines.push(t("Weight {weight} kg, age {age}", document.body.dataset));
      lines.push(t("Candidate devices: {sizes} — {basis}. Rule: {rule} ({source}). Decision support, not an order.",
        { sizes: p.sizes.join(", ") || t("none"), basis: p.basis, rule: p.rule.says, source: p.rule.source }));
    }
    for (const text of lines) { const li = document.createElement("li"); li.textContent = text; $("plan-result").appendChild(li); }
  };
})();
