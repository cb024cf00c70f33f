// Loaded first on every page. The Content-Security-Policy allows no inline
// script, so the translation catalogue comes as a JSON data block and the
// small behaviours of the markup are bound here.
window.I18N = JSON.parse(document.getElementById("i18n-catalogue")?.textContent || "{}");
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-autosubmit]")) event.target.form.submit();
});
document.addEventListener("click", (event) => {
  if (event.target.matches("[data-print]")) window.print();
});
