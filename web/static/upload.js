// Upload page: file picker, drag-and-drop and paste, a progress bar per file.
// Signed in (and with tus-js-client installed): each file is a resumable upload - a ticket from
// POST /api/v1/uploads, then tus 1.0 straight to an upload node. The ticket is kept in
// localStorage under the file's name, size, type and modification time, so choosing the same
// file again after a reload or a dropped connection continues where the upload node's
// committed offset is (a ticket near its end is renewed: POST /api/v1/uploads/<id>/ticket); while a
// ticket is kept, a line under the drop zone (#resume-hint) names its file.
// Otherwise: one multipart POST to /api/v1/images per file.
// Each answer's deletion link is shown, labelled (a resumable upload's comes from GET /api/v1/uploads/<id>,
// which gives it to the image's owner). Anonymous: it is the only way to delete such an image, and the
// recent uploads' links are kept in localStorage (RECENT) so a reload still lists them.
"use strict";
(() => {
  const drop = document.getElementById("drop");
  const picker = document.getElementById("file");
  const list = document.getElementById("uploads");
  if (!drop || !picker || !list) return;
  const maxBytes = Number(drop.dataset.maxBytes || 0);
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const resumable = drop.dataset.resumable === "1" && window.tus && window.tus.isSupported;
  // localStorage key prefix: tickets are per user, and another user's are dropped on sight (a
  // shared browser after a log-out must never send the next user's file on the last one's ticket)
  const TICKETS = "pixelfox-upload:" + (drop.dataset.user || "anonymous") + "/";
  try {
    for (const k of Object.keys(localStorage)) {
      if (k.startsWith("pixelfox-upload:") && !k.startsWith(TICKETS)) localStorage.removeItem(k);
    }
  } catch (_) { /* storage unavailable: nothing was kept */ }
  const resumeHint = document.getElementById("resume-hint");
  // after a reload nothing on the page shows an upload that stopped half-way: its ticket (kept
  // below) says so, and picking the same file again goes on from where it stopped
  function showResumeHint() {
    if (!resumeHint) return;
    const names = [];
    try {
      for (const k of Object.keys(localStorage)) {
        if (!k.startsWith(TICKETS)) continue;
        const t = JSON.parse(localStorage.getItem(k) || "{}");
        if (t.name && !names.includes(t.name)) names.push(t.name);
      }
    } catch (_) { /* storage unavailable or an unreadable entry: no hint */ }
    resumeHint.hidden = !resumable || names.length === 0;
    resumeHint.textContent = names.length === 1
      ? "Unfinished upload of " + names[0] + ": choose the same file again to continue where it stopped."
      : "Unfinished uploads of " + names.join(", ") + ": choose the same files again to continue where they stopped.";
  }
  function forgetTicket(key) {
    localStorage.removeItem(key);
    showResumeHint();
  }
  showResumeHint();
  const CHUNK = 1024 * 1024;  // bytes per PATCH: what a reload can lose at most
  const anonymous = drop.dataset.anonymous === "1";
  const RECENT = "pixelfox-recent-uploads";  // [{id, name, url, deletion_url, thumbnail_url}], newest first
  const RECENT_MAX = 50;
  const recentNote = document.getElementById("recent");

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

  // the share link and, when the answer has one, the deletion link (labelled: it is not for sharing)
  function links(body, data) {
    const a = el("a", "", data.url);
    a.href = data.url;
    body.append(a, linkRow("link", data.url));
    if (!data.deletion_url) return;
    const del = el("div", "deletion");
    del.append(el("div", "muted", "Deletion link: keep this link to delete the image later (do not share it)"),
      linkRow("deletion link", data.deletion_url));
    body.append(del);
  }

  function recentUploads() {
    try {
      const kept = JSON.parse(localStorage.getItem(RECENT) || "[]");
      return Array.isArray(kept) ? kept : [];
    } catch (_) { return []; }  // unreadable or no storage: nothing was kept
  }

  function remember(data, name) {
    const kept = recentUploads().filter((r) => r.id !== data.id);
    kept.unshift({ id: data.id, name, url: data.url, deletion_url: data.deletion_url,
      thumbnail_url: data.thumbnail_url || "" });
    try { localStorage.setItem(RECENT, JSON.stringify(kept.slice(0, RECENT_MAX))); } catch (_) { /* private mode */ }
    if (recentNote) recentNote.hidden = false;
  }

  // the kept uploads of earlier visits, under the new ones; "Clear this list" forgets them all
  function showRecent() {
    const kept = recentUploads();
    for (const r of kept) {
      if (typeof r.url !== "string" || typeof r.deletion_url !== "string") continue;
      const item = el("li", "upload remembered");
      const thumb = el("img", "thumb");
      thumb.alt = "";
      if (r.thumbnail_url) thumb.src = r.thumbnail_url;
      const body = el("div");
      body.append(el("div", "name", r.name || "image"), el("div", "state muted", "uploaded earlier"));
      links(body, r);
      item.append(thumb, body);
      list.append(item);
    }
    if (!recentNote) return;
    recentNote.hidden = kept.length === 0;
    document.getElementById("recent-clear").addEventListener("click", () => {
      try { localStorage.removeItem(RECENT); } catch (_) { /* nothing kept */ }
      for (const row of list.querySelectorAll("li.remembered")) row.remove();  // uploads under way stay
      recentNote.hidden = true;
    });
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
    const show = (ok, data, httpStatus) => {
      bar.remove();
      if (ok) {
        state.className = "state ok";
        state.textContent = data.status === "ready" ? "ready" : data.status || "uploaded";
        // the same bytes were uploaded before: this is that image, its title and page unchanged
        if (data.deduplicated) state.textContent += " (already uploaded: your existing image)";
        if (data.status === "failed" && data.error) {
          state.className = "state bad";
          state.textContent = "failed: " + data.error.message;
        }
        if (data.thumbnail_url) thumb.src = data.thumbnail_url;
        if (data.status === "processing" && data.id) poll(data.id, state, thumb, 0);
        links(body, data);
        if (data.note) body.append(el("div", "muted note", data.note));  // its links open only for you
        if (anonymous && data.deletion_url) {
          remember(data, file.name || "pasted image");
          item.classList.add("remembered");  // "Clear this list" takes it away too
        }
      } else {
        state.className = "state bad";
        state.textContent = (data.error && data.error.message) || ("upload failed (HTTP " + httpStatus + ")");
      }
    };
    if (resumable && file.size > 0) {
      resumableUpload(file, bar, state, show);
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
    xhr.addEventListener("load", () => show(xhr.status >= 200 && xhr.status < 300, xhr.response || {}, xhr.status));
    xhr.addEventListener("error", () => show(false, { error: { message: "network error" } }, 0));
    xhr.send(form);
  }

  // the file's name, size, type, modification time and the SHA-256 of its first 256 KiB (where
  // the browser offers crypto.subtle: https or localhost), so another file with the same name
  // and size is never appended to this one's partial upload
  async function ticketKey(file) {
    let head = "";
    if (window.crypto && window.crypto.subtle) {
      const digest = await window.crypto.subtle.digest("SHA-256", await file.slice(0, 262144).arrayBuffer());
      head = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    }
    return TICKETS + [file.name, file.size, file.type, file.lastModified, head].join("/");
  }

  // POST JSON to the web node with the session's CSRF token: [ok, status, the answer's JSON]
  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    return [r.ok, r.status, await r.json().catch(() => ({}))];
  }

  // the stored ticket for this file if it has over a minute left; else that upload's ticket renewed
  // (it lives upload_ttl_s after its last chunk), or a new upload when it is gone (404, 409, 403)
  async function ticketFor(file, key) {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(key) || "null");
    } catch (_) { /* unreadable entry: start over */ }
    if (saved && Date.parse(saved.expires_at) - Date.now() > 60000) return saved;
    let ok = false, status = 0, data = {};
    if (saved && saved.id) {
      [ok, status, data] = await post("/api/v1/uploads/" + encodeURIComponent(saved.id) + "/ticket");
      if (!ok && ![403, 404, 409].includes(status)) {
        throw new Error((data.error && data.error.message) || ("HTTP " + status));
      }
    }
    if (!ok) {
      [ok, status, data] = await post("/api/v1/uploads",
        { filename: file.name || "pasted.png", size: file.size, content_type: file.type });
      if (!ok) throw new Error((data.error && data.error.message) || ("HTTP " + status));
    }
    const t = { id: data.id, upload_url: data.upload_url, ticket: data.ticket, expires_at: data.expires_at,
      name: file.name || "pasted.png" };
    try { localStorage.setItem(key, JSON.stringify(t)); } catch (_) { /* private mode: no resume after reload */ }
    return t;
  }

  async function resumableUpload(file, bar, state, show) {
    let key, t;
    try {
      key = await ticketKey(file);
      t = await ticketFor(file, key);
    } catch (e) {
      show(false, { error: { message: String(e.message || e) } }, 0);
      return;
    }
    state.textContent = "uploading 0 %";
    let moved = false;  // any progress on this attempt
    let heads = 0;  // HEAD requests on this attempt
    const up = new window.tus.Upload(file, {
      uploadUrl: t.upload_url,  // the manager created the upload: no tus creation request
      headers: { Authorization: "Bearer " + t.ticket },
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      storeFingerprintForResuming: false,  // the ticket store above does that
      onAfterResponse: (req, res) => {
        if (req.getMethod() !== "HEAD" || res.getStatus() !== 200) return;
        heads += 1;  // only the first HEAD finds an earlier visit's bytes; later ones are tus-js-client's own retries
        const offset = Number(res.getHeader("Upload-Offset") || 0);
        if (heads === 1 && offset > 0) {
          state.textContent = "resumed at " + Math.floor((offset / file.size) * 100) + " %";
          state.dataset.resumedAt = String(offset);
        }
      },
      onProgress: (sent, total) => {
        moved = true;
        const pct = Math.floor((sent / total) * 100);
        bar.value = pct;
        const resumed = state.dataset.resumedAt ? " (resumed)" : "";
        state.textContent = pct < 100 ? "uploading " + pct + " %" + resumed : "processing…";
      },
      onError: async (err) => {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        if (status === 401) {
          // "ticket already used": the same file picked twice shares one upload, and the other
          // row completed it first; the upload's image is this row's result too
          const done = await finished(t.id);
          if (done[0]) {
            forgetTicket(key);
            show(...done);
            return;
          }
        }
        // network errors, 5xx, a busy upload (423), an offset race (409) or a rate limit (429) keep
        // the ticket for a resume; any other answer (401 ticket, 404 gone, 400 a bad image...) is final
        let retryable = status === 0 || status >= 500 || [409, 423, 429].includes(status);
        if (status === 0 && !moved) {
          // nothing got through on this attempt either: after 3 such attempts the stored upload
          // URL is taken to be unreachable (node gone, blocked) and the next pick starts over
          const misses = (t.misses || 0) + 1;
          if (misses >= 3) retryable = false;
          else try { localStorage.setItem(key, JSON.stringify({ ...t, misses })); } catch (_) { /* ignore */ }
        }
        if (!retryable) forgetTicket(key);
        let message = "upload stopped";
        try { message = JSON.parse(err.originalResponse.getBody()).error.message; } catch (_) { /* not our JSON */ }
        const again = retryable ? " - choose the file again to continue" : "";
        show(false, { error: { message: message + again } }, status);
      },
      onSuccess: async () => {
        forgetTicket(key);
        show(...(await finished(t.id)));
      },
    });
    up.start();
  }

  // the upload's image once the upload node has stored it, as [ok, data, status] for show(). The
  // last byte can arrive before the upload is complete: the same file picked twice shares one
  // upload, and the other row's PATCH may still be storing it ("open" at full offset), so that
  // answer is asked again (~30 s); any other state is answered at once
  async function finished(id) {
    for (let n = 0; n < 60; n++) {
      try {
        const r = await fetch("/api/v1/uploads/" + encodeURIComponent(id), { credentials: "same-origin" });
        const data = await r.json().catch(() => ({}));
        if (r.ok && data.image) {  // the image, with its deletion link (the owner's) and the private-duplicate note
          return [true, { ...data.image, deduplicated: data.deduplicated, note: data.note }, r.status];
        }
        const storing = (data.status === "open" && data.size > 0 && data.offset === data.size) ||
          data.status === "complete";  // every byte is in: the upload node is storing it
        if (!r.ok || !storing) return [false, data, r.status];
      } catch (e) {
        if (n >= 5) return [false, { error: { message: "uploaded, but the result could not be read: " + e } }, 0];
      }
      await new Promise((done) => setTimeout(done, 500));
    }
    return [false, { error: { message: "uploaded, but the server has not finished it yet; see My images" } }, 0];
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

  if (anonymous) showRecent();

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
