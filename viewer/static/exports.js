// The research export page: preview counts, start, follow and cancel jobs.
// A job is queued until a node process's runner takes it, then running.
(() => {
  const form = document.getElementById("cohort");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const { t, fmt } = window;
  const download = t("Download");
  const cancel = t("Cancel");
  const filters = () => Object.fromEntries(new FormData(form));
  async function answer(response) {
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || response.statusText);
    return body;
  }
  document.getElementById("preview").onclick = async () => {
    const counts = document.getElementById("counts");
    try {
      const c = await answer(await fetch("/api/exports/preview?" + new URLSearchParams(filters())));
      counts.textContent = counts.dataset.template.replace(/\{(\w+)\}/g, (_, k) =>
        k === "mb" ? fmt(c.bytes / 1e6, 1) : c[k]);
    } catch (error) { counts.textContent = error.message; }
  };
  const unfinished = (state) => state === "queued" || state === "running";
  function row(job) {
    let tr = document.querySelector(`tr[data-job="${job.id}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.job = job.id;
      tr.innerHTML = '<td></td><td class="state"></td><td><progress max="100"></progress> ' +
        '<span class="message"></span></td><td class="action"></td>';
      tr.cells[0].textContent = job.id;
      document.getElementById("jobs").prepend(tr);
    }
    tr.querySelector(".state").textContent = t(job.state);
    tr.querySelector(".state").dataset.state = job.state;
    tr.querySelector("progress").value = job.percent;
    tr.querySelector(".message").textContent = t(job.message);
    const action = tr.querySelector(".action");
    action.replaceChildren();
    const link = document.createElement(unfinished(job.state) ? "button" : "a");
    if (job.state === "done") {
      link.href = `/api/exports/${job.id}/download`;
      link.textContent = download;
    } else if (unfinished(job.state)) {
      link.textContent = cancel;
      link.onclick = () => fetch(`/api/exports/${job.id}/cancel`,
        {method: "POST", headers: {"X-CSRF-Token": csrf}});
    }
    if (link.textContent) action.append(link);
    if (unfinished(job.state)) {
      setTimeout(async () => row(await answer(await fetch(`/api/exports/${job.id}`))), 500);
    }
  }
  document.getElementById("start").onclick = async () => {
    const counts = document.getElementById("counts");
    try {
      row(await answer(await fetch("/api/exports", {method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        // linkable as a boolean: the server refuses any other spelling
        body: JSON.stringify({...filters(), linkable: form.elements.linkable?.checked === true})})));
    } catch (error) { counts.textContent = error.message; }
  };
  document.querySelectorAll("tr[data-job]").forEach((tr) => {
    if (unfinished(tr.querySelector(".state").dataset.state)) {
      fetch(`/api/exports/${tr.dataset.job}`).then(answer).then(row);
    }
  });
})();
