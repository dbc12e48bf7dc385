// Upload page: file picker, drag-and-drop and paste, a progress bar per file.
// Signed in (and with tus-js-client installed): each file is a resumable upload - a ticket from
// POST /api/v1/uploads, then tus 1.0 straight to an upload node. The ticket is kept in
// localStorage under the file's name, size, type and modification time, so choosing the same
// file again after a reload or a dropped connection continues where the upload node's
// committed offset is (a ticket near its end is renewed: POST /api/v1/uploads/<id>/ticket); while a
// ticket is kept, a line under the drop zone (#resume-hint) names its file.
// Otherwise: one multipart POST to /api/v1/images per file.
// Signed in, the "Private" box (#private) as it is when a file is picked makes that file's upload private
// (visibility=private: its image is only its owner's to see from the first answer on); a private upload's
// kept ticket is apart from a public one's, so the same file picked with the other choice never resumes it.
// Each answer's deletion link is shown, labelled (a resumable upload's comes from GET /api/v1/uploads/<id>,
// which gives it to the image's owner). Anonymous: it is the only way to delete such an image, and the
// recent uploads' links are kept in localStorage (RECENT) so a reload still lists them.
// A file the server refused (or too large to send) loses its preview: the row is marked refused
// (li.refused, a plain box in place of the <img>) and its message is an alert; a preview the browser
// cannot draw is dropped at once (no broken-image icon). An upload that stopped (a dropped connection, or
// a 503 or 429: the cluster cannot take files for now) keeps its preview: li.stopped, its message an alert. While tus-js-client retries a dropped
// connection by itself the row says so ("retrying", .state[data-retrying]). An upload node that stops
// answering without dropping the connection (frozen: nothing is read, no answer comes) leaves tus-js-client
// waiting for ever: no progress for STALL_MS (#drop's data-stall-ms, the web setting upload_stall_s) aborts the
// request and starts again from the committed offset, after a second stall on another upload node (the ticket
// renewed with exclude_address), and after MAX_STALLS the row stops (li.stopped).
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
  const privateBox = document.getElementById("private");  // signed in only
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
  const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000];  // ms before tus-js-client's retries of a failed request
  // ms without any progress (a byte sent, an answer) after which an upload's node is taken to have stopped answering
  const STALL_MS = Number(drop.dataset.stallMs || 0) || 20000;
  const STALLS_PER_NODE = 2;  // stalls on one upload URL before the upload moves to another upload node
  const MAX_STALLS = 4;  // stalls of one upload in all before its row stops
  // the outcome of each file's upload running on this page, by its ticket key: a row for the same file picked
  // again meanwhile waits for it (it shared the first row's ticket and upload, and showed "resumed" and
  // HTTP 423 retries for bytes it never sent)
  const running = new Map();
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

  // a file the server refused (or one never sent): no preview of it, a plain box marked refused instead of
  // the <img> (a broken-image icon when the browser cannot draw the file either), and the message as an alert
  function refuse(state, message) {
    const item = state.closest("li.upload");
    const thumb = item && item.querySelector("img.thumb");
    if (thumb) {
      const box = el("span", "thumb none", "\u2715");
      box.setAttribute("aria-hidden", "true");
      thumb.replaceWith(box);
    }
    if (item) item.classList.add("refused");
    state.className = "state bad";
    state.setAttribute("role", "alert");
    delete state.dataset.retrying;
    state.textContent = message;
  }

  // an answer that is no refusal but a "not now": the cluster cannot take files for a while (503: no
  // upload or storage node takes new ones, say all in maintenance), this client sent too many (429), or
  // its body stopped arriving on the way (408 body-timeout: "send it again")
  const TEMPORARY = [408, 429, 503];

  // an upload that stopped on the way (the connection dropped, or a temporary answer: TEMPORARY): not
  // refused, the preview stays; the row is marked li.stopped and the message is an alert
  function stopped(bar, state, message) {
    bar.remove();
    const item = state.closest("li.upload");
    if (item) item.classList.add("stopped");
    state.setAttribute("role", "alert");
    state.className = "state bad";
    delete state.dataset.retrying;
    state.textContent = message;
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
      item.dataset.id = r.id;
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
    const visibility = privateBox && privateBox.checked ? "private" : "public";  // as chosen when picked
    const item = el("li", "upload");
    const thumb = el("img", "thumb");
    thumb.alt = "";
    if (file.type.startsWith("image/")) {
      const preview = URL.createObjectURL(file);
      thumb.src = preview;
      thumb.addEventListener("load", () => URL.revokeObjectURL(preview), { once: true });
      // not an image after all (a renamed text file) or a format this browser cannot draw (HEIC):
      // an empty box until the server answers, never a broken-image icon
      thumb.addEventListener("error", () => {
        URL.revokeObjectURL(preview);
        if (thumb.getAttribute("src") === preview) thumb.removeAttribute("src");
      }, { once: true });
    }
    const body = el("div");
    const name = el("div", "name", file.name || "pasted image");
    if (visibility === "private") {
      item.classList.add("private");
      name.append(el("span", "muted tag", " · private"));
    }
    const bar = el("progress");
    bar.max = 100; bar.value = 0;
    const state = el("div", "state muted", "waiting…");
    body.append(name, bar, state);
    item.append(thumb, body);
    list.prepend(item);

    if (maxBytes && file.size > maxBytes) {
      bar.remove();
      refuse(state, "too large (limit " + Math.round(maxBytes / 1048576) + " MiB)");
      return;
    }
    const show = (ok, data, httpStatus) => {
      bar.remove();
      if (ok) {
        state.className = "state ok";
        state.textContent = data.status === "ready" ? "ready" : data.status || "uploaded";
        // the same bytes were uploaded before: this is that image, its title and page unchanged
        if (data.deduplicated) state.textContent += " (already uploaded: your existing image)";
        if (data.status === "failed" && data.error) refuse(state, "failed: " + data.error.message);
        else if (data.thumbnail_url) thumb.src = data.thumbnail_url;
        if (data.status === "processing" && data.id) poll(data.id, state, thumb, 0);
        links(body, data);
        if (data.note) body.append(el("div", "muted note", data.note));  // its links open only for you
        if (anonymous && data.deletion_url) {
          remember(data, file.name || "pasted image");
          item.classList.add("remembered");  // "Clear this list" takes it away too
          item.dataset.id = data.id;
        }
      } else {
        const message = (data.error && data.error.message) || ("upload failed (HTTP " + httpStatus + ")");
        // a 503, 429 or 408 said "try again (later)": the file was not refused, its preview stays (a 503
        // used to drop it and mark the row refused, as if the file were bad)
        if (TEMPORARY.includes(httpStatus)) stopped(bar, state, message + " - choose the file again later");
        else refuse(state, message);
      }
    };
    if (resumable && file.size > 0) {
      resumableUpload(file, bar, state, show, visibility);
      return;
    }
    const form = new FormData();
    if (visibility === "private") form.append("visibility", visibility);
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
    xhr.addEventListener("error", () => stopped(bar, state, "network error: the connection dropped; choose the file again"));
    xhr.send(form);
  }

  // the file's name, size, type, modification time and the SHA-256 of its first 256 KiB (where
  // the browser offers crypto.subtle: https or localhost), so another file with the same name
  // and size is never appended to this one's partial upload
  async function ticketKey(file, visibility) {
    let head = "";
    if (window.crypto && window.crypto.subtle) {
      const digest = await window.crypto.subtle.digest("SHA-256", await file.slice(0, 262144).arrayBuffer());
      head = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    }
    const parts = [file.name, file.size, file.type, file.lastModified, head];
    return TICKETS + (visibility === "private" ? [...parts, "private"] : parts).join("/");
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

  // an Error for a web node's refusal: its message, and the HTTP status as .status (for show())
  function answerError(status, data) {
    const e = new Error((data.error && data.error.message) || ("HTTP " + status));
    e.status = status;
    return e;
  }

  // the stored ticket for this file if it has over a minute left; else that upload's ticket renewed
  // (it lives upload_ttl_s after its last chunk), or a new upload when it is gone (404, 409, 403)
  async function ticketFor(file, key, visibility) {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(key) || "null");
    } catch (_) { /* unreadable entry: start over */ }
    if (saved && Date.parse(saved.expires_at) - Date.now() > 60000) return saved;
    let ok = false, status = 0, data = {};
    if (saved && saved.id) {
      [ok, status, data] = await post("/api/v1/uploads/" + encodeURIComponent(saved.id) + "/ticket");
      if (!ok && ![403, 404, 409].includes(status)) throw answerError(status, data);
    }
    if (!ok) {
      [ok, status, data] = await post("/api/v1/uploads",
        { filename: file.name || "pasted.png", size: file.size, content_type: file.type, visibility });
      if (!ok) throw answerError(status, data);
    }
    return keepTicket(key, data, file.name || "pasted.png");
  }

  // the ticket of a POST /api/v1/uploads(/<id>/ticket) answer, kept under key for a resume
  function keepTicket(key, data, name) {
    const t = { id: data.id, upload_url: data.upload_url, upload_address: data.upload_address, ticket: data.ticket,
      expires_at: data.expires_at, name };
    try { localStorage.setItem(key, JSON.stringify(t)); } catch (_) { /* private mode: no resume after reload */ }
    return t;
  }

  // upload t's ticket renewed on another upload node than t's, which stopped answering (the same node when no
  // other is healthy); null when the web node could not say (the caller goes on with t)
  async function moveTicket(key, t) {
    try {
      const [ok, , data] = await post("/api/v1/uploads/" + encodeURIComponent(t.id) + "/ticket",
        { exclude_address: t.upload_address || "" });
      return ok ? keepTicket(key, data, t.name) : null;
    } catch (_) {
      return null;  // no answer either: the next stall ends the row
    }
  }

  async function resumableUpload(file, bar, state, shown, visibility) {
    let key, t;
    try {
      key = await ticketKey(file, visibility);
    } catch (e) {
      shown(false, { error: { message: String(e.message || e) } }, 0);
      return;
    }
    const earlier = running.get(key);
    if (earlier) {
      state.textContent = "the same file as a row above: its upload's result shows here too";
      const [how, args] = await earlier;
      if (how === "show") shown(...args);
      else stopped(bar, state, args);
      return;
    }
    let settle, over = false;
    const outcome = new Promise((resolve) => { settle = resolve; });
    running.set(key, outcome);
    const ended = (how, args) => {  // this row's end, told to the rows waiting for it (once)
      if (over) return;
      over = true;
      if (running.get(key) === outcome) running.delete(key);
      settle([how, args]);
    };
    const show = (...args) => { ended("show", args); shown(...args); };
    const stop = (message) => { ended("stop", message); stopped(bar, state, message); };
    try {
      t = await ticketFor(file, key, visibility);
    } catch (e) {
      // fetch() rejects with a TypeError when no answer came: the connection, not a refusal
      if (e instanceof TypeError) stop("network error: the connection dropped; choose the file again");
      else show(false, { error: { message: String(e.message || e) } }, e.status || 0);
      return;
    }
    state.textContent = "uploading 0 %";
    let moved = false;  // any progress on this attempt
    let heads = 0;  // HEAD requests on this attempt
    let stalls = 0, stallsHere = 0;  // times no progress came for STALL_MS: in all, and on t.upload_url
    let watchdog = 0;
    let up = null;
    // (re)armed on every sign of life; extraMs: a retry tus-js-client waits for before its next request
    const watch = (extraMs) => {
      clearTimeout(watchdog);
      watchdog = setTimeout(stalled, STALL_MS + (extraMs || 0));
    };
    const unwatch = () => clearTimeout(watchdog);
    // nothing moved for STALL_MS: the upload node is frozen (a dropped connection or an answer would have
    // ended the request); abort and start again from the committed offset (HEAD), on another node the
    // second time, and give up after MAX_STALLS
    async function stalled() {
      stalls += 1;
      stallsHere += 1;
      up.abort();
      if (stalls >= MAX_STALLS) {
        stop("the upload node stopped answering - choose the file again to continue");
        return;
      }
      state.dataset.retrying = String(stalls);
      state.textContent = "the upload node stopped answering: retrying…";
      if (stallsHere >= STALLS_PER_NODE) {
        const other = await moveTicket(key, t);
        if (other) {
          t = other;
          stallsHere = 0;
          up = send();
        }
      }
      watch();
      up.start();
    }
    const send = () => new window.tus.Upload(file, {
      uploadUrl: t.upload_url,  // the manager created the upload: no tus creation request
      headers: { Authorization: "Bearer " + t.ticket },
      chunkSize: CHUNK,
      retryDelays: RETRY_DELAYS,
      storeFingerprintForResuming: false,  // the ticket store above does that
      onAfterResponse: (req, res) => {
        watch();  // an answer: the node is alive
        if (req.getMethod() !== "HEAD" || res.getStatus() !== 200) return;
        heads += 1;  // only the first HEAD finds an earlier visit's bytes; later ones are tus-js-client's own retries
        const offset = Number(res.getHeader("Upload-Offset") || 0);
        if (heads === 1 && offset > 0) {
          state.textContent = "resumed at " + Math.floor((offset / file.size) * 100) + " %";
          state.dataset.resumedAt = String(offset);
        }
      },
      // tus-js-client's own decision (a network error, a 5xx, 409 or 423, the browser not offline), shown
      // on the row: a retried PATCH used to leave the bar still with no word of it
      onShouldRetry: (err, attempt) => {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        const again = (status < 400 || status >= 500 || status === 409 || status === 423) && navigator.onLine !== false;
        if (again) {
          watch(RETRY_DELAYS[attempt] || 0);
          state.dataset.retrying = String(attempt + 1);
          state.textContent = (status ? "the server answered HTTP " + status : "connection lost") +
            ": retrying (" + (attempt + 1) + " of " + RETRY_DELAYS.length + ")…";
        }
        return again;
      },
      onProgress: (sent, total) => {
        watch();
        moved = true;
        delete state.dataset.retrying;
        const pct = Math.floor((sent / total) * 100);
        bar.value = pct;
        const resumed = state.dataset.resumedAt ? " (resumed)" : "";
        state.textContent = pct < 100 ? "uploading " + pct + " %" + resumed : "processing…";
      },
      onError: async (err) => {
        unwatch();
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
        // no answer (the connection dropped) is no refusal: the preview stays
        if (retryable || status === 0) stop(message + again);
        else show(false, { error: { message } }, status);
      },
      onSuccess: async () => {
        unwatch();
        forgetTicket(key);
        show(...(await finished(t.id)));
      },
    });
    up = send();
    watch();
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
          refuse(state, "failed: " + ((data.error && data.error.message) || "processing failed"));
          return;
        }
      } catch (_) { /* network hiccup: try again */ }
      poll(id, state, thumb, n + 1);
    }, 1500);
  }

  function take(files) {
    for (const f of files) upload(f);
  }

  if (anonymous) {
    showRecent();
    // back from a deletion link's "Image deleted" page, which dropped it from the list (forget.js):
    // a page restored from the back/forward cache runs no script again: its rows of forgotten ones go
    window.addEventListener("pageshow", (e) => {
      if (!e.persisted) return;
      const ids = new Set(recentUploads().map((r) => r && r.id));
      for (const row of list.querySelectorAll("li.remembered")) if (!ids.has(row.dataset.id)) row.remove();
      if (recentNote && !list.querySelector("li.remembered")) recentNote.hidden = true;
    });
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
