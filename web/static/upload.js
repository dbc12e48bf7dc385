// Upload page: file picker, drag-and-drop and paste; one XHR per file with a progress bar.
"use strict";
(() => {
  const drop = document.getElementById("drop");
  const picker = document.getElementById("file");
  const list = document.getElementById("uploads");
  if (!drop || !picker || !list) return;
  const maxBytes = Number(drop.dataset.maxBytes || 0);
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function linkRow(label, value) {
    const row = el("div", "links");
    const input = el("input");
    input.type = "text"; input.readOnly = true; input.value = value; input.setAttribute("aria-label", label);
    const btn = el("button", "copy", "Copy " + label);
    btn.type = "button";
    btn.addEventListener("click", async () => {
      input.select();
      try { await navigator.clipboard.writeText(value); } catch (_) { document.execCommand("copy"); }
      btn.textContent = "Copied";
      clearTimeout(btn.copiedTimer);
      btn.copiedTimer = setTimeout(() => { btn.textContent = "Copy " + label; }, 2000);
    });
    row.append(input, btn);
    return row;
  }

  function upload(file) {
    const item = el("li", "upload");
    const thumb = el("img", "thumb");
    thumb.alt = "";
    if (file.type.startsWith("image/")) {
      thumb.src = URL.createObjectURL(file);
      thumb.addEventListener("load", () => URL.revokeObjectURL(thumb.src), { once: true });
    }
    const body = el("div");
    const name = el("div", "name", file.name || "pasted image");
    const bar = el("progress");
    bar.max = 100; bar.value = 0;
    const state = el("div", "state muted", "waiting…");
    body.append(name, bar, state);
    item.append(thumb, body);
    list.prepend(item);

    if (maxBytes && file.size > maxBytes) {
      bar.remove();
      state.textContent = "too large (limit " + Math.round(maxBytes / 1048576) + " MiB)";
      state.className = "state bad";
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/images");
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      const pct = Math.round((ev.loaded / ev.total) * 100);
      bar.value = pct;
      state.textContent = pct < 100 ? "uploading " + pct + " %" : "processing…";
    });
    xhr.addEventListener("load", () => {
      const data = xhr.response || {};
      bar.remove();
      if (xhr.status >= 200 && xhr.status < 300) {
        state.className = "state ok";
        state.textContent = data.status === "ready" ? "ready" : data.status || "uploaded";
        if (data.status === "failed" && data.error) {
          state.className = "state bad";
          state.textContent = "failed: " + data.error.message;
        }
        if (data.thumbnail_url) thumb.src = data.thumbnail_url;
        if (data.status === "processing" && data.id) poll(data.id, state, thumb, 0);
        const a = el("a", "", data.url);
        a.href = data.url;
        body.append(a, linkRow("link", data.url));
      } else {
        state.className = "state bad";
        state.textContent = (data.error && data.error.message) || ("upload failed (HTTP " + xhr.status + ")");
      }
    });
    xhr.addEventListener("error", () => {
      bar.remove();
      state.className = "state bad";
      state.textContent = "network error";
    });
    xhr.send(form);
  }

  // still processing when the server stopped waiting: ask again until ready or failed (~5 min)
  function poll(id, state, thumb, n) {
    if (n > 200) return;
    setTimeout(async () => {
      try {
        const r = await fetch("/api/v1/images/" + encodeURIComponent(id), { credentials: "same-origin" });
        const data = r.ok ? await r.json() : {};
        if (data.status === "ready") {
          state.className = "state ok"; state.textContent = "ready";
          if (data.thumbnail_url) thumb.src = data.thumbnail_url;
          return;
        }
        if (data.status === "failed") {
          state.className = "state bad";
          state.textContent = "failed: " + ((data.error && data.error.message) || "processing failed");
          return;
        }
      } catch (_) { /* network hiccup: try again */ }
      poll(id, state, thumb, n + 1);
    }, 1500);
  }

  function take(files) {
    for (const f of files) upload(f);
  }

  picker.addEventListener("change", () => { take(picker.files); picker.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
    ev.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (ev) => take(ev.dataTransfer ? ev.dataTransfer.files : []));
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") picker.click(); });
  document.addEventListener("paste", (ev) => {
    const files = [];
    for (const item of (ev.clipboardData ? ev.clipboardData.items : [])) {
      if (item.kind === "file") { const f = item.getAsFile(); if (f) files.push(f); }
    }
    if (files.length) { ev.preventDefault(); take(files); }
  });
})();
