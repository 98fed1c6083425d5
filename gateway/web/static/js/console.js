// auditbox console: confirmation before destructive forms (no inline handlers: the CSP forbids them)
"use strict";
document.addEventListener("submit", function (e) {
  const form = e.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    e.preventDefault();
  }
});
