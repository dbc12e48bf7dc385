// The "Image deleted" page (a deletion link, web/deletion.py): the upload page's list of recent
// anonymous uploads (localStorage, upload.js) forgets the image, whose share and deletion links
// now answer 404; it went on showing them as "uploaded earlier".
(() => {
  const card = document.querySelector("section.deletion[data-slug]");
  if (!card || !document.getElementById("deleted")) return;
  const RECENT = "pixelfox-recent-uploads";  // upload.js
  try {
    const kept = JSON.parse(localStorage.getItem(RECENT) || "[]");
    if (!Array.isArray(kept)) return;
    const left = kept.filter((r) => !r || r.id !== card.dataset.slug);
    if (left.length === kept.length) return;
    if (left.length) localStorage.setItem(RECENT, JSON.stringify(left));
    else localStorage.removeItem(RECENT);
  } catch (_) { /* no storage: nothing was kept */ }
})();
