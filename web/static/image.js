// Image, album, settings and admin report pages: copy buttons for the embed codes and links;
// forms or buttons marked data-confirm (deleting an image or an album, revoking a key) ask first, once.
"use strict";
document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button.copy");
  if (!btn) return;
  const input = document.getElementById(btn.dataset.target);
  if (!input) return;
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (_) {
    document.execCommand("copy");
  }
  btn.dataset.label = btn.dataset.label || btn.textContent;  // a second click inside the window keeps it
  btn.textContent = "Copied";
  clearTimeout(btn.copiedTimer);
  btn.copiedTimer = setTimeout(() => { btn.textContent = btn.dataset.label; }, 2000);
});
document.addEventListener("submit", (ev) => {
  const form = ev.target;
  // a form that asked and was answered "yes" is on its way: a second click (a double-click) neither
  // asks again nor sends it twice
  if (form.dataset.pending) {
    ev.preventDefault();
    return;
  }
  // the button pressed may ask (one form, several actions), else the form
  const question = (ev.submitter && ev.submitter.dataset.confirm) || form.dataset.confirm;
  if (!question) return;
  if (window.confirm(question)) form.dataset.pending = "1";
  else ev.preventDefault();
});
// back to a page kept in the back/forward cache: its forms work again
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-pending]")) delete form.dataset.pending;
});
