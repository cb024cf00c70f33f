// The study's closure plans: the list (each plan's latest version, signed or
// not), the worksheet of the plan being edited (forms drawn from the server's
// catalogue in #plan-forms: fields, rims and choices, nothing of its own),
// saving a new version and signing one. Values come from measurements
// through window.measureApi (measure.js).
"use strict";

(() => {
  const { t, fmt } = window;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const study = document.body.dataset.study;
  const measure = window.measureApi;
  const FORMS = JSON.parse($("plan-forms").textContent);
  const editor = $("plan-editor"); // absent for roles that do not plan
  let versions = []; // every version of every plan, as GET /plans gives them
  let current = { plan: null, version: null, signed: false }; // what a save continues

  // A server message: English {text, values} (or plain text) in the page's language.
  function say(body) {
    if (!body) return "";
    if (typeof body === "string") return t(body);
    const values = Object.fromEntries(Object.entries(body.values || {}).map(([k, v]) => [k,
      typeof v === "number" && !Number.isInteger(v) ? fmt(v) : typeof v === "string" ? t(v) : v]));
    return body.text !== undefined ? t(body.text, values) : t(body.says || body.message || "", values);
  }
  // A worksheet value in 0.1 mm, half away from zero on the number as written
  // (4.05 → 4.1, as the list's Intl formatting shows it, though the float is a
  // hair under; toFixed would give 4.0): the server rounds the same way.
  function tenth(value) {
    const written = Math.abs(value).toString();
    if (/e/i.test(written)) return Math.sign(value) * Math.round(Math.abs(value) * 10) / 10;
    const [whole, fraction = ""] = written.split(".");
    const tenths = Number(whole) * 10 + Number(fraction[0] || 0) + ((fraction[1] || "0") >= "5" ? 1 : 0);
    return (Math.sign(value) || 1) * tenths / 10;
  }
  // A typed length in mm: digits with at most one decimal separator, a point
  // or a comma (Russian users write 4,5). A number input would read "4,5" as
  // 45 (the comma taken for a thousands separator): ten times the rim.
  // Anything else is NaN, refused before saving.
  function mm(text) {
    const written = text.trim();
    return /^\d+([.,]\d+)?$/.test(written) ? Number(written.replace(",", ".")) : NaN;
  }
  const when = (iso) => (iso ? new Intl.DateTimeFormat(document.documentElement.lang || "en",
    { dateStyle: "short", timeStyle: "short" }).format(new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`)) : "");

  async function request(url, body) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await response.json(); } catch { answer = { message: response.statusText }; }
    return [response.status, answer];
  }

  function show(lines, warning = false) {
    $("plan-result").innerHTML = "";
    for (const text of lines) {
      const li = document.createElement("li");
      li.textContent = text;
      if (warning) li.classList.add("warning");
      $("plan-result").appendChild(li);
    }
  }

  // --- the list ------------------------------------------------------------
  const latestOf = () => {
    const latest = new Map();
    for (const v of versions) if (!latest.has(v.plan) || latest.get(v.plan).version < v.version) latest.set(v.plan, v);
    return [...latest.values()].sort((a, b) => a.plan - b.plan);
  };

  function renderList() {
    const body = $("plans").querySelector("tbody");
    body.innerHTML = "";
    const latest = latestOf();
    $("no-plans").hidden = latest.length > 0;
    $("print-plans").hidden = latest.length === 0;
    for (const v of latest) {
      const row = document.createElement("tr");
      row.dataset.plan = v.plan;
      const cells = [v.plan, t(v.defect), v.version, v.author, when(v.created_at),
        v.signed_by ? t("signed by {user}, {when}", { user: v.signed_by, when: when(v.signed_at) }) : t("not signed")];
      for (const text of cells) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }
      const actions = document.createElement("td");
      if (editor) {
        const open = document.createElement("button");
        open.type = "button"; open.textContent = t("Open"); open.className = "open-plan";
        open.onclick = () => openVersion(v, true); // its own lines and calibrations, no other plan's
        actions.appendChild(open);
      }
      const print = document.createElement("a");
      print.href = `/studies/${study}/plan/print?plan=${v.plan}`; print.target = "_blank";
      print.textContent = t("Print"); print.className = "print-plan";
      actions.append(" ", print);
      row.appendChild(actions);
      body.appendChild(row);
    }
  }

  async function refresh() {
    const response = await fetch(`/api/studies/${study}/plans`);
    versions = response.ok ? await response.json() : [];
    renderList();
  }

  // Reopened, the study shows its most recently saved plan, its lines drawn again.
  const lastSaved = () => [...versions].sort((a, b) => (a.created_at < b.created_at ? -1 : 1)).pop();
  if (!editor) {
    refresh().then(() => { const last = lastSaved(); if (last) measure.load(last.content); });
    return;
  }

  // --- the worksheet -------------------------------------------------------
  function fieldRow(field) {
    const row = document.createElement("label");
    row.append(`${t(field.meaning)} `);
    if (field.kind === "choice") {
      const select = document.createElement("select");
      select.dataset.choice = field.code;
      select.dataset.key = field.key; // its name in the plan body and the saved plan
      select.id = field.key;
      select.appendChild(document.createElement("option"));
      for (const choice of field.choices) {
        const option = document.createElement("option");
        option.value = choice.value; option.textContent = `${choice.value} (${t(choice.label)})`;
        select.appendChild(option);
      }
      row.appendChild(select);
      return row;
    }
    const input = document.createElement("input");
    Object.assign(input, { type: "text", inputMode: "decimal", size: 6 });
    input.dataset.code = field.code;
    input.addEventListener("input", () => { input.measurement = null; delete input.dataset.uid; delete input.dataset.frame; });
    row.append(input, ` ${t("mm")} `);
    const use = document.createElement("button");
    use.type = "button"; use.textContent = t("use last measurement");
    use.onclick = () => {
      const last = measure.lastLength();
      if (!last) { show([t("Draw a length in mm first.")], true); return; }
      input.value = tenth(last.value).toFixed(1);
      input.measurement = last;
      delete input.dataset.uid; delete input.dataset.frame;
    };
    row.appendChild(use);
    return row;
  }

  function drawForm() {
    const form = FORMS[$("defect").value];
    $("slots").replaceChildren(...form.fields.map(fieldRow));
    $("rims").replaceChildren(...form.rims.map((rim) => {
      const row = document.createElement("label");
      const input = document.createElement("input");
      Object.assign(input, { type: "text", inputMode: "decimal", size: 6 });
      input.dataset.rim = rim.name;
      row.append(`${t(rim.meaning)} `, input, ` ${t("mm")}`);
      return row;
    }));
    $("rims").hidden = form.rims.length === 0;
  }

  function label() {
    if (current.plan === null) {
      $("plan-title").textContent = t("New plan");
      $("plan-version").textContent = "";
    } else {
      const v = versions.find((x) => x.plan === current.plan && x.version === current.version);
      $("plan-title").textContent = t("Plan {n}: {defect}", { n: current.plan, defect: t($("defect").value) });
      $("plan-version").textContent = t("Plan version {version} by {author}, {when}",
        { version: current.version, author: v ? v.author : "", when: v ? when(v.created_at) : "" }) +
        (current.signed && v ? ` · ${t("signed by {user}, {when}", { user: v.signed_by, when: when(v.signed_at) })}` : "");
    }
    $("defect").disabled = current.plan !== null; // a plan keeps its defect: another defect is a new plan
    $("sign-plan").hidden = current.plan === null || current.signed;
  }

  // Fill the worksheet from a saved version; with ``drawn``, also put its
  // measurements and calibrations back on the images (in place of those drawn:
  // a plan keeps only its own).
  function openVersion(v, drawn) {
    if (drawn) measure.load(v.content);
    current = { plan: v.plan, version: v.version, signed: Boolean(v.signed_by) };
    $("defect").value = v.defect;
    drawForm();
    const saved = v.content.measurements || [];
    const now = measure.planned();
    for (const slot of v.content.slots || []) {
      const input = document.querySelector(`#slots input[data-code="${slot.code}"]`);
      if (!input) continue;
      input.value = slot.value_mm;
      const from = Number.isInteger(slot.measurement) ? saved[slot.measurement] : null;
      // The same line among those drawn now (a plan reopened over another's lines: typed in).
      input.measurement = from ? now.find((m) => m.uid === from.uid && m.frame === from.frame &&
        JSON.stringify(m.points) === JSON.stringify(from.points)) || null : null;
      if (!input.measurement && slot.instance_uid) { input.dataset.uid = slot.instance_uid; input.dataset.frame = slot.frame || ""; }
    }
    for (const [rim, value] of Object.entries(v.content.rims || {})) {
      const input = document.querySelector(`#rims input[data-rim="${rim}"]`);
      if (input) input.value = value;
    }
    for (const select of document.querySelectorAll("#slots select[data-key]")) {
      select.value = v.content[select.dataset.key] || "";
    }
    $("note").value = v.content.note || "";
    label();
  }

  // A new plan starts with no measurements (another plan's are not this one's);
  // the calibrations on screen stay, said so, since they belong to the study's runs.
  function newPlan() {
    const calibrations = measure.calibrations ? measure.calibrations() : [];
    measure.load({ measurements: [], calibrations });
    show(calibrations.length ? [t("New plan: no measurements yet; the calibrations on the images are kept.")] : []);
    current = { plan: null, version: null, signed: false };
    $("note").value = "";
    drawForm();
    label();
    $("defect").focus();
  }

  function slots() {
    const out = [];
    const drawn = measure.planned();
    for (const input of document.querySelectorAll("#slots input[data-code]")) {
      if (input.value.trim() === "") continue;
      const value = mm(input.value);
      const slot = { code: input.dataset.code, value_mm: value };
      const index = input.measurement ? drawn.indexOf(input.measurement) : -1;
      // Linked only while the line still says what the field says (deleted or dragged since: typed in).
      if (index >= 0 && Math.abs(drawn[index].value - value) <= 0.05 + 1e-9) slot.measurement = index;
      else if (input.dataset.uid) { slot.instance_uid = input.dataset.uid; slot.frame = Number(input.dataset.frame) || null; }
      out.push(slot);
    }
    return out;
  }

  function proposalLines(plan) {
    const lines = [t("Saved as version {n} (report series stored).", { n: plan.version })];
    if ((plan.deficient_rims || []).length) {
      lines.push(t("Deficient rims (< 5 mm): {rims}", { rims: plan.deficient_rims.map(t).join(", ") }));
    }
    const p = plan.proposal;
    if (!p) return lines;
    const sizes = p.sizes.map((size) => size.replace(/ mm$/, ` ${t("mm")}`)).join(", ");
    lines.push(t("Candidate devices: {sizes} — {basis}. Rule: {rule} ({source}). Decision support, not an order.",
      { sizes: sizes || t("none"), basis: say(p.basis),
        rule: say({ text: p.rule.says, values: p.rule.values }), source: t(p.rule.source) }));
    for (const rule of (p.rules || []).slice(1)) {
      lines.push(`${t("Rule")}: ${say({ text: rule.says, values: rule.values })} (${t(rule.source)})`);
    }
    for (const warning of p.warnings || []) lines.push(`⚠ ${say(warning)}`);
    for (const note of p.notes || []) lines.push(say(note));
    return lines;
  }

  $("defect").onchange = drawForm;
  $("new-plan").onclick = newPlan;

  $("save-plan").onclick = async () => {
    const rims = {};
    document.querySelectorAll("#rims input").forEach((i) => { if (i.value.trim() !== "") rims[i.dataset.rim] = mm(i.value); });
    const unread = [...document.querySelectorAll("#slots input[data-code], #rims input")]
      .filter((i) => i.value.trim() !== "" && Number.isNaN(mm(i.value)));
    if (unread.length) {
      show(unread.map((i) => t("Not a length in mm: {value}", { value: i.value.trim() })), true);
      unread[0].focus();
      return;
    }
    const body = {
      plan: current.plan ?? "new", based_on: current.version, defect: $("defect").value,
      slots: slots(), rims, note: $("note").value,
      measurements: measure.planned(), calibrations: measure.calibrations ? measure.calibrations() : [],
    };
    // Each choice of the form under its key (the catalogue keeps keys off the body's own).
    for (const select of document.querySelectorAll("#slots select[data-key]")) body[select.dataset.key] = select.value;
    $("save-plan").disabled = true;
    try {
      const [status, plan] = await request(`/api/studies/${study}/plans`, body);
      if (status !== 201) { show([say(plan.text !== undefined ? plan : plan.message)], true); return; }
      await refresh();
      current = { plan: plan.plan, version: plan.version, signed: false };
      label();
      show(proposalLines(plan));
    } finally {
      $("save-plan").disabled = false;
    }
  };

  $("sign-plan").onclick = async () => {
    const { plan, version } = current;
    const [status, answer] = await request(`/api/studies/${study}/plans/${plan}/versions/${version}/sign`, {});
    if (status !== 201) { show([say(answer.text !== undefined ? answer : answer.message)], true); return; }
    await refresh();
    current.signed = true;
    label();
    show([t("Version {version} of plan {plan} signed.", { version, plan }),
      t("Signed: this version can no longer change; a later save makes a new version.")]);
  };

  drawForm();
  label();
  refresh().then(() => {
    const last = lastSaved();
    if (last) openVersion(latestOf().find((v) => v.plan === last.plan), true);
  });
})();
