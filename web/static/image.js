// Image, album, settings and admin report pages: copy buttons for the embed codes and links;
// forms or buttons marked data-confirm (deleting an image or an album, revoking a key) ask first.
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
  // the button pressed may ask (one form, several actions), else the form
  const question = (ev.submitter && ev.submitter.dataset.confirm) || (ev.target.dataset && ev.target.dataset.confirm);
  if (question && !window.confirm(question)) ev.preventDefault();
});
