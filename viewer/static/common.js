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
// A sentence the server composed in English with values inside ("catheter 6F
// (calibration 1)", "this measurement needs 3 points") is translated by the
// catalogue entry whose {placeholders} fit it, the most literal entry first;
// the values caught are translated in turn, decimals rewritten for the page
// (viewer/i18n.py translate() does the same on the server).
(() => {
  const PATTERNS = Object.keys(window.I18N).filter((k) => /\{\w+\}/.test(k) &&
    [...k.matchAll(/\{(\w+)\}/g)].every(([, name]) => /^[A-Za-z_]\w*$/.test(name))).map((english) => {
    const seen = new Set();
    const source = english.split(/\{(\w+)\}/).map((part, i) => {
      if (i % 2 === 0) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      if (seen.has(part)) return `\\k<${part}>`;
      seen.add(part);
      return `(?<${part}>[\\s\\S]+?)`;
    }).join("");
    return { english, regex: new RegExp(`^${source}$`), literal: english.replace(/\{\w+\}/g, "").length };
  }).sort((a, b) => b.literal - a.literal);
  function translate(text, depth = 0) {
    if (typeof text !== "string" || !text) return text ?? "";
    if (window.I18N[text]) return window.I18N[text];
    if (depth > 2 || text.length > 400) return text; // a message is a line
    for (const { english, regex } of PATTERNS) {
      const match = regex.exec(text);
      if (!match) continue;
      return Object.entries(match.groups).reduce((out, [key, value]) => out.replaceAll(`{${key}}`,
        /^-?\d+\.\d+$/.test(value) ? window.fmt(Number(value), value.split(".")[1].length)
          : translate(value, depth + 1)), window.I18N[english]);
    }
    if (text.includes(", ")) return text.split(", ").map((item) => translate(item, depth + 1)).join(", ");
    return text;
  }
  // t(text, values) or t({text, values}) (a message as the server sends it);
  // numbers among the values are written for the page (12.5 -> 12,5).
  window.t = (text, values = {}) => {
    if (text && typeof text === "object") return window.t(text.text, text.values || {});
    const shown = (value) => (typeof value === "number" && !Number.isInteger(value) ? window.fmt(value) : value);
    if (!Object.keys(values).length) return translate(text);
    return Object.entries(values).reduce((out, [key, value]) => out.replaceAll(`{${key}}`, shown(value)),
      window.I18N[text] || text);
  };
})();
window.fmt = (value, digits = 1) => new Intl.NumberFormat(document.documentElement.lang || "en",
  { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
