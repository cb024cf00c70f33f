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
// Translation of interface text ("{name}" placeholders) and numbers in the
// page's language (decimal comma in Russian): one definition for all scripts.
window.t = (text, values = {}) => Object.entries(values).reduce(
  (out, [key, value]) => out.replaceAll(`{${key}}`, value), window.I18N[text] || text);
window.fmt = (value, digits = 1) => new Intl.NumberFormat(document.documentElement.lang || "en",
  { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
