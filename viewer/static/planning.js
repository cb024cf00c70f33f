// The closure-planning worksheet: fills slots from measurements (measure.js,
// window.measureApi), saves plan versions and shows the sizing aid.
"use strict";

(() => {
  const { t, fmt } = window;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const study = document.body.dataset.study;
  const measure = window.measureApi;
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

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    return [response.status, await response.json()];
  }

  function slotsForm() {
    const defect = $("defect").value;
    $("slots").innerHTML = "";
    for (const [code, meaning] of SLOTS[defect]) {
      const row = document.createElement("label");
      row.innerHTML = `${t(meaning)} <input data-code="${code}" data-meaning="${meaning}" type="number" step="0.1" min="0"> ${t("mm")} `;
      const use = document.createElement("button");
      use.type = "button"; use.textContent = t("use last measurement");
      use.onclick = () => {
        const last = measure.lastLength();
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
    measure.load(latest.content);
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
      { defect: $("defect").value, slots, rims, note: $("note").value, measurements: measure.measurements(), krichenko,
        calibration: measure.calibration() });
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
