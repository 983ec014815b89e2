// The vdir web interface: plain JavaScript over the REST API (/v1) with the caller's bearer token.
// Views are chosen by the URL fragment (#/files?path=/a/b), so the back button and links work.
"use strict";

const PAGE = 100;               // entries per page of a directory listing
const SMALL_UPLOAD = 8 << 20;   // bigger files go through a resumable upload session

const state = { token: sessionStorage.getItem("vdir.token") || "", me: null, backends: null };

// -- helpers -----------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function fmtSize(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

function join(dir, name) { return dir === "/" ? `/${name}` : `${dir}/${name}`; }
function parent(path) { const i = path.lastIndexOf("/"); return i <= 0 ? "/" : path.slice(0, i); }
function baseName(path) { return path.slice(path.lastIndexOf("/") + 1); }

function say(message, kind) {
  const el = document.getElementById("status");
  el.textContent = message || "";
  el.className = message ? (kind || "info") : "";
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.errno = body && body.errno;
  }
}

async function api(method, url, body, opts) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers };
  if (body !== undefined && body !== null) {
    if (body instanceof Blob || body instanceof ArrayBuffer) {
      headers["Content-Type"] = "application/octet-stream";
      init.body = body;
    } else {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  const resp = await fetch(url, init);
  if (opts && opts.raw && resp.ok) return resp;
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { error: text }; } }
  if (!resp.ok) {
    if (resp.status === 401 && !(opts && opts.login)) { logout(`Signed out: ${(data && data.error) || "unauthorised"}`); }
    throw new ApiError(resp.status, data);
  }
  return data;
}

function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") s.set(k, v);
  return s.toString();
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query] = hash.split("?");
  return { name: name || "files", params: new URLSearchParams(query || "") };
}

function go(name, params) {
  const query = params ? q(params) : "";
  location.hash = `#/${name}${query ? "?" + query : ""}`;
}

function fail(err) {
  say(err.message || String(err), "error");
}

async function guard(fn) {
  try { return await fn(); } catch (err) { if (err.status !== 401) fail(err); return undefined; }
}

function ask(title, fields, okLabel) {
  // a modal form: resolves to {name: value} or null when cancelled
  const dialog = document.getElementById("dialog");
  document.getElementById("dialog-title").textContent = title;
  const body = document.getElementById("dialog-body");
  body.replaceChildren();
  const inputs = {};
  for (const f of fields) {
    if (f.text) { body.append(h("p", {}, f.text)); continue; }
    const id = `dlg-${f.name}`;
    inputs[f.name] = h("input", { id, name: f.name, value: f.value || "", required: f.required !== false,
                                   type: f.type || "text", autocomplete: "off" });
    body.append(h("p", {}, h("label", { for: id, style: "display:block" }, f.label), inputs[f.name]));
  }
  document.getElementById("dialog-ok").textContent = okLabel || "OK";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      const out = {};
      for (const [k, el] of Object.entries(inputs)) out[k] = el.value;
      resolve(out);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    const first = Object.values(inputs)[0];
    if (first) { first.focus(); first.select(); } else document.getElementById("dialog-ok").focus();
  });
}

function table(headers, rows, opts) {
  const head = h("tr", {}, headers.map((c) => h("th", { scope: "col", class: c.cls }, c.label || c)));
  // wrapped so a wide table scrolls by itself on a narrow screen, not the whole page
  return h("div", { class: "scroll" }, h("table", opts || {}, h("thead", {}, head), h("tbody", {}, rows)));
}

function td(content, cls) { return h("td", { class: cls }, content); }

// -- login ---------------------------------------------------------------------------------------
function logout(message) {
  state.token = "";
  state.me = null;
  state.projects = null;
  sessionStorage.removeItem("vdir.token");
  render();
  if (message) say(message, "error");
}

function viewLogin(main) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true,
                             placeholder: "vdir_…", "aria-describedby": "token-help" });
  const form = h("form", { class: "login", onsubmit: async (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    try {
      state.me = await api("GET", "/v1/whoami", null, { login: true });
      sessionStorage.setItem("vdir.token", state.token);
      say("");
      render();
    } catch (err) {
      state.token = "";
      say(`Login refused: ${err.message}`, "error");
    }
  } },
  h("h1", {}, "Log in"),
  h("p", {}, h("label", { for: "token" }, "API token"), input),
  h("p", { id: "token-help", class: "muted" }, "A token from ", h("code", {}, "vdir token create"),
    ". It stays in this tab only (session storage)."),
  h("p", {}, h("button", { class: "primary", type: "submit", id: "login" }, "Log in")));
  main.append(form);
  input.focus();
}

// -- files ---------------------------------------------------------------------------------------
function crumbs(path, view) {
  const parts = path.split("/").filter(Boolean);
  const items = [h("li", {}, h("a", { href: `#/${view}?${q({ path: "/" })}` }, "root"))];
  let acc = "";
  for (const p of parts) {
    acc += "/" + p;
    items.push(h("li", {}, h("a", { href: `#/${view}?${q({ path: acc })}` }, p)));
  }
  items[items.length - 1].firstChild.setAttribute("aria-current", "location");
  return h("nav", { "aria-label": "Breadcrumbs" }, h("ol", { class: "crumbs", id: "crumbs" }, items));
}

async function viewFiles(main, params) {
  const path = params.get("path") || "/";
  const after = params.get("after") || "";
  const prev = params.get("prev") || "";        // cursors of the earlier pages, "|"-separated
  const sort = params.get("sort") || "name";
  const order = params.get("order") || "asc";
  const search = params.get("search") || "";
  const filter = params.get("filter") || "";

  main.append(h("h1", {}, "Files"), crumbs(path, "files"));
  let info;
  try { info = await api("GET", `/v1/stat?${q({ path })}`); } catch (err) {
    if (err.status === 401) return;
    main.append(h("p", { class: "bad", id: "refused" }, err.message));
    say(err.message, "error");
    return;
  }
  if (info.type !== "dir") { await showDetails(main, path, info); return; }

  const filterInput = h("input", { id: "filter", type: "search", value: filter, "aria-label": "Filter this page by name",
                                   placeholder: "filter this page" });
  filterInput.addEventListener("input", () => applyFilter(filterInput.value));
  const sortSelect = h("select", { id: "sort", "aria-label": "Sort by" },
    ["name", "size", "mtime", "type"].map((s) => h("option", { value: s, selected: s === sort }, s === "mtime" ? "modified" : s)));
  const orderSelect = h("select", { id: "order", "aria-label": "Order" },
    h("option", { value: "asc", selected: order === "asc" }, "ascending"),
    h("option", { value: "desc", selected: order === "desc" }, "descending"));
  const onSort = () => go("files", { path, after, prev, sort: sortSelect.value, order: orderSelect.value, filter: filterInput.value });
  sortSelect.addEventListener("change", onSort);
  orderSelect.addEventListener("change", onSort);
  const searchInput = h("input", { id: "search", type: "search", value: search, "aria-label": "Search names below this folder",
                                   placeholder: "search names (glob)" });
  const searchForm = h("form", { class: "inline", role: "search", onsubmit: (ev) => {
    ev.preventDefault(); go("files", { path, search: searchInput.value });
  } }, searchInput, h("button", { type: "submit" }, "Search"));
  const write = canWrite(path);
  main.append(h("div", { class: "toolbar" }, filterInput, sortSelect, orderSelect, searchForm,
    write ? h("button", { type: "button", id: "mkdir", onclick: () => makeDir(path) }, "New folder") : null,
    h("a", { href: `#/where?${q({ path })}` }, "Where is the data?")));
  if (write) main.append(uploader(path));

  let items, next = null;
  if (search) {
    const pattern = /[*?[]/.test(search) ? search : `*${search}*`;
    const found = await guard(() => api("GET", `/v1/find?${q({ path, name: pattern, limit: 1000 })}`));
    if (!found) return;
    items = found.items.filter((i) => i.path !== path);
    main.append(h("p", { class: "muted" }, `${items.length} match(es) for “${pattern}” below ${path}. `,
      h("a", { href: `#/files?${q({ path })}` }, "Clear search")));
  } else {
    const page = await guard(() => api("GET", `/v1/ls?${q({ path, after, limit: PAGE })}`));
    if (!page) return;
    items = page.items;
    next = page.next;
  }
  const key = { name: (i) => i.name, size: (i) => i.size, mtime: (i) => i.mtime, type: (i) => i.type }[sort];
  items.sort((a, b) => {
    const x = key(a), y = key(b);
    const c = typeof x === "number" ? x - y : (x < y ? -1 : x > y ? 1 : 0);
    return order === "desc" ? -c : c;
  });
  const rows = items.map((i) => { const p = search ? i.path : join(path, i.name); return fileRow(i, p, canWrite(p) && p !== path, search); });
  main.append(table([{ label: "Name" }, { label: "Size", cls: "num" }, { label: "Modified", cls: "hide-narrow" },
    { label: "Copies", cls: "num hide-narrow" }, { label: "Actions" }], rows, { id: "listing" }));
  if (!items.length) main.append(h("p", { class: "muted", id: "empty" }, search ? "Nothing found." : "This folder is empty."));

  if (!search) {
    const cursors = prev ? prev.split("|") : [];
    const pager = h("nav", { class: "toolbar", "aria-label": "Pages" });
    if (after) {
      const back = cursors.slice(0, -1);
      pager.append(h("button", { type: "button", id: "prev-page", onclick: () => go("files", {
        path, after: cursors.length ? cursors[cursors.length - 1] : "", prev: back.join("|"), sort, order }) }, "← Previous page"));
    }
    if (next) {
      pager.append(h("button", { type: "button", id: "next-page", onclick: () => go("files", {
        path, after: next, prev: [...cursors, after].filter((c, n) => c || n > 0).join("|"), sort, order }) }, "Next page →"));
    }
    pager.append(h("span", { class: "muted" }, `page ${cursors.length + (after ? 1 : 0) + 1}, ${items.length} entries` +
      (next ? " (more follow)" : "")));
    main.append(pager);
  }
  if (filter) applyFilter(filter);
}

function applyFilter(text) {
  const needle = text.toLowerCase();
  for (const row of document.querySelectorAll("#listing tbody tr")) {
    row.hidden = needle !== "" && !row.dataset.name.toLowerCase().includes(needle);
  }
}

function canWrite(path) {
  // what the core would allow, to offer only the buttons that can work (the server checks again)
  if (!state.me || !state.me.scopes.includes("write")) return false;
  if (state.me.admin) return true;
  if (path === undefined) return true;
  for (const p of state.projects || []) {
    const role = (p.members || {})[state.me.user];
    if (role !== "editor" && role !== "owner") continue;
    for (const prefix of p.prefixes || []) if (path === prefix || path.startsWith(prefix + "/")) return true;
  }
  return false;
}

function fileRow(i, path, write, showPath) {
  const label = showPath ? path : i.name + (i.type === "dir" ? "/" : "");
  const link = h("a", { href: `#/files?${q({ path })}`, class: "name" }, label);
  const actions = h("td", { class: "actions" });
  if (i.type === "file") {
    actions.append(h("button", { type: "button", "aria-label": `Download ${i.name}`, onclick: () => download(path) }, "Download"), " ");
  }
  if (write) {
    actions.append(h("button", { type: "button", "aria-label": `Rename or move ${i.name}`, onclick: () => rename(path) }, "Rename"), " ",
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${i.name}`, onclick: () => remove(path, i.type) }, "Delete"));
  }
  const good = (i.replicas || []).filter((r) => r.state === "ok").length;
  return h("tr", { "data-name": i.name, "data-path": path }, td(link), td(i.type === "dir" ? "" : fmtSize(i.size), "num"),
    td(fmtTime(i.mtime), "hide-narrow"), td(i.type === "file" ? String(good) : "", "num hide-narrow"), actions);
}

async function showDetails(main, path, info) {
  const where = await guard(() => api("GET", `/v1/web/where?${q({ path })}`));
  const locs = (where && where.backends) || {};
  const box = h("section", { class: "details", id: "details", "aria-label": "File details" });
  box.append(h("h2", {}, info.name),
    h("dl", { class: "kv" },
      h("dt", {}, "Path"), h("dd", {}, info.path),
      h("dt", {}, "Type"), h("dd", {}, info.type + (info.target ? ` → ${info.target}` : "")),
      h("dt", {}, "Size"), h("dd", {}, `${fmtSize(info.size)} (${info.size} bytes)`),
      h("dt", {}, "Modified"), h("dd", {}, fmtTime(info.mtime)),
      h("dt", {}, "Changed"), h("dd", {}, fmtTime(info.ctime)),
      h("dt", {}, "Hash"), h("dd", {}, info.hash || "—"),
      h("dt", {}, "Version"), h("dd", {}, String(info.version)),
      h("dt", {}, "Owner"), h("dd", {}, `uid ${info.uid}, gid ${info.gid}, mode ${(info.mode & 0o7777).toString(8)}`),
      h("dt", {}, "Project"), h("dd", {}, projectOf(path) || "—")));
  const rows = (info.replicas || []).map((r) => {
    const loc = locs[r.backend] || {};
    return h("tr", {}, td(r.backend), td(loc.cloud || ""), td(loc.region || ""), td(loc.tier || ""),
      td(r.state, r.state === "ok" ? "ok" : "bad"), td(r.verified_at ? fmtTime(r.verified_at) : "never"), td(r.key, "name hide-narrow"));
  });
  box.append(h("h2", {}, "Replicas"), table(["Backend", "Cloud", "Region", "Tier", "State", "Last verified",
    { label: "Key", cls: "hide-narrow" }], rows, { id: "replicas" }));
  if (where && where.rules.length) {
    const r = where.rules[0];
    box.append(h("p", { id: "policy-met" }, r.rule ? `Policy rule “${r.rule}” (line ${r.line}) wants ${r.copies} ` +
      `cop${r.copies === 1 ? "y" : "ies"}; ${r.verified} verified — ${r.short ? "not met" : "met"}.` : "No placement rule applies."));
  }
  const buttons = h("p", { class: "toolbar" });
  if (info.type === "file") buttons.append(h("button", { type: "button", class: "primary", id: "download", onclick: () => download(path) }, "Download"));
  if (canWrite(path)) {
    buttons.append(h("button", { type: "button", onclick: () => rename(path) }, "Rename or move"),
      h("button", { type: "button", class: "danger", onclick: () => remove(path, info.type) }, "Delete"));
  }
  box.append(buttons);
  main.append(box);
}

function projectOf(path) {
  for (const p of state.projects || []) {
    for (const prefix of p.prefixes || []) if (path === prefix || path.startsWith(prefix + "/")) return p.name;
  }
  return "";
}

async function download(path) {
  await guard(async () => {
    say(`Downloading ${path}…`);
    const resp = await api("GET", `/v1/files?${q({ path })}`, null, { raw: true });
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: baseName(path) });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say(`Downloaded ${path} (${fmtSize(blob.size)})`);
  });
}

async function makeDir(dir) {
  const got = await ask("New folder", [{ name: "name", label: `Name (in ${dir})` }], "Create");
  if (!got || !got.name) return;
  await guard(async () => {
    await api("POST", "/v1/mkdir", { path: join(dir, got.name), parents: false, exist_ok: false });
    say(`Created ${join(dir, got.name)}`);
    render();
  });
}

async function rename(path) {
  const got = await ask(`Rename or move ${baseName(path)}`, [{ name: "dst", label: "New path (or a folder to move into)", value: path }], "Move");
  if (!got || !got.dst || got.dst === path) return;
  await guard(async () => {
    const moved = await api("POST", "/v1/mv", { src: path, dst: got.dst, force: false });
    say(`Moved ${path} to ${moved.path}`);
    if (route().params.get("path") === path) go("files", { path: moved.path }); else render();
  });
}

async function remove(path, type) {
  const keep = await guard(() => api("GET", "/v1/trash/keep"));
  const where = keep && keep.keep_seconds > 0 ? "to the trash" : "for good (the trash is off)";
  const got = await ask(`Delete ${baseName(path)}?`, [{ text: `${path}${type === "dir" ? " and everything below it" : ""} will be moved ${where}.` }], "Delete");
  if (!got) return;
  await guard(async () => {
    const r = await api("DELETE", `/v1/files?${q({ path, recursive: type === "dir" })}`);
    say(`Deleted ${path}${r.trashed ? " (in the trash)" : ""}`);
    if (route().params.get("path") === path) go("files", { path: parent(path) }); else render();
  });
}

// -- uploads -------------------------------------------------------------------------------------
function uploader(dir) {
  const input = h("input", { type: "file", id: "upload-input", multiple: true });
  const list = h("div", { id: "uploads", "aria-live": "polite" });
  const zone = h("div", { class: "drop", id: "drop" },
    h("label", { for: "upload-input" }, "Upload files: drop them here or choose "), input, list);
  input.addEventListener("change", () => { uploadAll(dir, input.files, list); input.value = ""; });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    uploadAll(dir, ev.dataTransfer.files, list);
  });
  return zone;
}

async function uploadAll(dir, files, list) {
  let ok = 0;
  const all = Array.from(files);
  for (const file of all) {
    const bar = h("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const line = h("p", { class: "upload" }, `${file.name} `, bar, " ", h("span", {}, "starting"));
    list.append(line);
    const note = (text) => { line.lastChild.textContent = text; };
    try {
      const path = join(dir, file.name);
      let force = false;
      for (;;) {
        try {
          if (file.size <= SMALL_UPLOAD) await putSmall(path, file, bar, force); else await putResumable(path, file, bar, note, force);
          break;
        } catch (err) {
          if (err.status !== 409 || force || err.errno !== "EEXIST") throw err;
          const got = await ask(`${file.name} exists`, [{ text: `Replace ${path} with the file you chose?` }], "Replace");
          if (!got) throw err;
          force = true;
        }
      }
      bar.value = bar.max;
      note("done");
      ok++;
    } catch (err) {
      note(`failed: ${err.message}`);
      line.classList.add("bad");
      fail(err);
    }
  }
  if (ok) {
    await refreshListing();  // first, so that the message means the listing shows the new files
    say(`Uploaded ${ok} of ${all.length} file(s) to ${dir}: ${all.map((f) => f.name).join(", ")}`);
  }
}

async function refreshListing() {
  const main = document.getElementById("main");
  const keepUploads = document.getElementById("uploads");
  const r = route();
  if (r.name !== "files") return;
  main.setAttribute("aria-busy", "true");
  main.replaceChildren();
  await viewFiles(main, r.params);
  const fresh = document.getElementById("uploads");
  if (keepUploads && fresh) fresh.replaceWith(keepUploads);
  main.removeAttribute("aria-busy");
}

function xhrSend(method, url, body, bar, base) {
  // XMLHttpRequest, not fetch: it reports upload progress
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, url);
    x.setRequestHeader("Authorization", `Bearer ${state.token}`);
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.upload.onprogress = (ev) => { if (bar) bar.value = (base || 0) + ev.loaded; };
    x.onload = () => {
      let data = null;
      try { data = JSON.parse(x.responseText); } catch (e) { data = { error: x.responseText }; }
      if (x.status >= 200 && x.status < 300) resolve(data); else reject(new ApiError(x.status, data));
    };
    x.onerror = () => reject(new ApiError(0, { error: "connection lost" }));
    x.send(body);
  });
}

async function putSmall(path, file, bar, force) {
  return xhrSend("PUT", `/v1/files?${q({ path, force: !!force })}`, file, bar, 0);
}

async function putResumable(path, file, bar, note, force) {
  // one session per (path, size, modification time), remembered so a reload resumes it
  const key = `vdir.upload:${path}:${file.size}:${file.lastModified}`;
  let id = localStorage.getItem(key);
  let offset = 0, chunk = 8 << 20;
  if (id) {
    try { offset = (await api("GET", `/v1/uploads/${id}`)).offset; note(`resuming at ${fmtSize(offset)}`); } catch (err) { id = null; }
  }
  if (!id) {
    const s = await api("POST", "/v1/uploads", { path, size: file.size, force: !!force });
    id = s.id;
    chunk = s.chunk_size || chunk;
    localStorage.setItem(key, id);
  }
  let failures = 0;
  while (offset < file.size) {
    const end = Math.min(file.size, offset + chunk);
    try {
      const r = await xhrSend("PUT", `/v1/uploads/${id}?offset=${offset}`, file.slice(offset, end), bar, offset);
      offset = r.offset;
      failures = 0;
      note(`${fmtSize(offset)} of ${fmtSize(file.size)}`);
    } catch (err) {
      if (err.status && err.status !== 409 && err.status < 500) throw err;
      if (++failures > 5) throw err;
      note(`connection cut; resuming (try ${failures})`);
      await new Promise((r) => setTimeout(r, 500 * failures));
      offset = (await api("GET", `/v1/uploads/${id}`)).offset;
    }
  }
  const info = await api("POST", `/v1/uploads/${id}/commit`, {});
  localStorage.removeItem(key);
  return info;
}

// -- trash ---------------------------------------------------------------------------------------
async function viewTrash(main) {
  main.append(h("h1", {}, "Trash"));
  const [list, keep] = await Promise.all([guard(() => api("GET", "/v1/trash")), guard(() => api("GET", "/v1/trash/keep"))]);
  if (!list) return;
  if (keep) {
    main.append(h("p", { class: "muted" }, keep.keep_seconds > 0
      ? `Removed entries are kept ${Math.round(keep.keep_seconds / 86400 * 10) / 10} day(s), then deleted.`
      : "The trash is off: deleting removes for good."));
  }
  const rows = list.items.map((t) => h("tr", { "data-path": t.path }, td(t.path, "name"), td(t.type),
    td(fmtSize(t.size), "num"), td(fmtTime(t.deleted_at), "hide-narrow"), td(t.deleted_by || "", "hide-narrow"),
    td(fmtTime(t.expires_at), "hide-narrow"),
    h("td", { class: "actions" }, h("button", { type: "button", "aria-label": `Restore ${t.path}`, onclick: () => restore(t) }, "Restore"))));
  main.append(table(["Path", "Type", { label: "Size", cls: "num" }, { label: "Deleted", cls: "hide-narrow" },
    { label: "By", cls: "hide-narrow" }, { label: "Expires", cls: "hide-narrow" }, "Actions"], rows, { id: "trash" }));
  if (!list.items.length) main.append(h("p", { class: "muted", id: "empty" }, "The trash is empty."));
  else if (canWrite()) {
    main.append(h("p", {}, h("button", { type: "button", class: "danger", onclick: async () => {
      const got = await ask("Empty the trash?", [{ text: "Every item you can see will be deleted for good." }], "Empty");
      if (!got) return;
      await guard(async () => { const r = await api("DELETE", "/v1/trash?all=true"); say(`Deleted ${r.removed} item(s)`); render(); });
    } }, "Empty the trash")));
  }
}

async function restore(item) {
  await guard(async () => {
    try {
      const info = await api("POST", `/v1/trash/${encodeURIComponent(item.id)}/restore`, {});
      say(`Restored ${info.path}`);
    } catch (err) {
      if (err.status !== 409) throw err;
      const got = await ask("That path is taken", [{ name: "to", label: `Restore ${item.path} as`, value: `${item.path}.restored` }], "Restore");
      if (!got) return;
      const info = await api("POST", `/v1/trash/${encodeURIComponent(item.id)}/restore`, { to: got.to });
      say(`Restored ${info.path}`);
    }
    render();
  });
}

// -- where is the data --------------------------------------------------------------------------
function barChart(title, data, id) {
  const entries = Object.entries(data).sort((a, b) => b[1] - a[1]);
  const total = entries.reduce((s, [, v]) => s + v, 0) || 1;
  const rowH = 26, labelW = 150, barW = 180, width = labelW + barW + 130;
  const height = Math.max(rowH, entries.length * rowH) + 8;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ` + entries.map(([k, v]) => `${k} ${fmtSize(v)}`).join(", "));
  const palette = ["#1d5fa8", "#2e8540", "#b26b00", "#7a3e9d", "#b42318", "#00798c", "#6b7280"];
  entries.forEach(([k, v], n) => {
    const y = 4 + n * rowH;
    const add = (tag, attrs, text) => {
      const el = document.createElementNS(ns, tag);
      for (const [a, b] of Object.entries(attrs)) el.setAttribute(a, b);
      if (text) el.textContent = text;
      svg.append(el);
    };
    add("text", { x: 0, y: y + 16 }, k.length > 22 ? k.slice(0, 21) + "…" : k);
    add("rect", { x: labelW, y: y + 3, width: Math.max(2, (v / total) * barW), height: rowH - 8, fill: palette[n % palette.length], rx: 3 });
    add("text", { x: labelW + barW + 6, y: y + 16 }, `${fmtSize(v)} · ${Math.round((v / total) * 100)}%`);
  });
  return h("figure", { id }, h("figcaption", {}, h("strong", {}, title)), entries.length ? svg : h("p", { class: "muted" }, "no verified copies"));
}

async function viewWhere(main, params) {
  const path = params.get("path") || "/";
  main.append(h("h1", {}, "Where the data is"), crumbs(path, "where"));
  const w = await guard(() => api("GET", `/v1/web/where?${q({ path })}`));
  if (!w) return;
  main.append(h("div", { class: "cards" },
    h("div", { class: "card" }, "Files", h("b", {}, String(w.files))),
    h("div", { class: "card" }, "Bytes", h("b", {}, fmtSize(w.bytes))),
    h("div", { class: "card" }, "Policy", h("b", {}, w.policy_version ? `v${w.policy_version}` : "none"))),
  h("p", {}, h("a", { href: `#/files?${q({ path })}` }, "Browse this folder"),
    w.truncated ? h("span", { class: "bad" }, " (only the first files were weighed)") : null));
  main.append(h("div", { class: "grid2" }, barChart("Bytes per cloud", w.per_cloud, "chart-cloud"),
    barChart("Bytes per region", w.per_region, "chart-region"), barChart("Bytes per backend", w.per_backend, "chart-backend")));
  const rows = w.rules.map((r) => h("tr", {}, td(r.rule ? `${r.rule} (line ${r.line})` : "no rule"), td(r.match || "—"),
    td(r.where || "—", "hide-narrow"), td(String(r.files), "num"), td(fmtSize(r.bytes), "num"), td(String(r.wanted), "num"),
    td(String(r.verified), "num"), td(r.rule ? (r.short ? `${r.short} file(s) short` : "met") : "—", r.short ? "bad" : "ok")));
  main.append(h("h2", {}, "Placement policy here"),
    table(["Rule", "Match", { label: "Where", cls: "hide-narrow" }, { label: "Files", cls: "num" }, { label: "Bytes", cls: "num" },
      { label: "Copies wanted", cls: "num" }, { label: "Verified", cls: "num" }, "Met?"], rows, { id: "rules" }));
}

// -- placement -------------------------------------------------------------------------------------
async function viewPlacement(main) {
  main.append(h("h1", {}, "Placement"));
  const s = await guard(() => api("GET", "/v1/placement/status"));
  if (!s) return;
  const t = s.tasks;
  main.append(h("div", { class: "cards", id: "tasks" },
    ["pending", "retrying", "running", "done", "failed"].map((k) => h("div", { class: "card", "data-count": k }, k, h("b", {}, String(t[k]))))));
  // throughput: bytes the daemons report as copied, between this refresh and the one before
  const copied = s.nodes.reduce((n, d) => n + (d.bytes || 0), 0);
  const now = Date.now() / 1000;
  const last = state.placementSample;
  const rate = last && now > last.t && copied >= last.bytes ? (copied - last.bytes) / (now - last.t) : null;
  state.placementSample = { t: now, bytes: copied };
  main.append(h("p", { class: "toolbar" }, `Progress ${(s.progress * 100).toFixed(1)}%.`,
    h("span", { id: "throughput" }, rate === null ? "Throughput: refresh to measure." : `Throughput: ${fmtSize(Math.round(rate))}/s since the last refresh.`),
    h("button", { type: "button", id: "refresh-placement", onclick: () => render() }, "Refresh"),
    h("button", { type: "button", class: "primary", id: "run-placement", onclick: runPlacement }, "Run placement now")),
  h("p", { id: "job" }));
  main.append(h("h2", {}, "Running"), table(["Task", "Kind", "Path", "Owner", { label: "Lease left", cls: "num" }],
    s.running.map((r) => h("tr", {}, td(r.id), td(r.kind), td(r.path || "", "name"), td(r.owner || ""), td(`${r.lease_left_s} s`, "num")))));
  main.append(h("h2", {}, "Failed"), table(["Task", "Kind", "Path", "Destination", { label: "Attempts", cls: "num" }, "Reason"],
    s.failed.map((r) => h("tr", {}, td(r.id), td(r.kind), td(r.path || "", "name"), td(r.destination || ""), td(String(r.attempts), "num"), td(r.error || "", "bad"))), { id: "failed" }));
  if (s.retrying.length) {
    main.append(h("h2", {}, "Retrying"), table(["Task", "Kind", "Path", { label: "Attempts", cls: "num" }, "Last error"],
      s.retrying.map((r) => h("tr", {}, td(r.id), td(r.kind), td(r.path || "", "name"), td(String(r.attempts), "num"), td(r.error || "", "bad")))));
  }
  main.append(h("h2", {}, "Daemons"), table(["Node", "Host", "Alive", { label: "Last seen", cls: "num" }, { label: "Done", cls: "num" },
    { label: "Failed", cls: "num" }, { label: "Copied", cls: "num" }],
  s.nodes.map((n) => h("tr", {}, td(n.node), td(n.host || ""), td(n.alive ? "yes" : "no", n.alive ? "ok" : "muted"),
    td(`${n.last_seen_s} s ago`, "num"), td(String(n.done ?? ""), "num"), td(String(n.failed ?? ""), "num"), td(fmtSize(n.bytes || 0), "num")))));
  main.append(h("h2", {}, "Bytes per backend"), table(["Backend", { label: "Replicas", cls: "num" }, { label: "Bytes", cls: "num" }, { label: "Not ok", cls: "num" }],
    Object.entries(s.backends).map(([k, v]) => h("tr", {}, td(k), td(String(v.replicas), "num"), td(fmtSize(v.bytes), "num"), td(String(v.bad), "num")))));
}

async function pollJob(job, el) {
  while (job.state === "queued" || job.state === "running") {
    el.textContent = `Job ${job.id} (${job.kind}): ${job.state}`;
    await new Promise((r) => setTimeout(r, 400));
    job = await api("GET", `/v1/jobs/${job.id}`);
  }
  return job;
}

async function runPlacement() {
  const el = document.getElementById("job");
  await guard(async () => {
    const job = await pollJob(await api("POST", "/v1/placement/run", { workers: 2 }), el);
    const r = job.result || {};
    const took = Math.max(0.001, job.updated - job.created);
    el.textContent = job.state === "done" ? `Placement run done: ${r.done ?? 0} task(s) done, ${r.failed ?? 0} failed, ` +
      `${fmtSize(r.bytes || 0)} copied in ${took.toFixed(1)} s (${fmtSize(Math.round((r.bytes || 0) / took))}/s)`
      : `Placement run ${job.state}: ${job.error || ""}`;
    el.id = "job-done";
    say(el.textContent);
    const main = document.getElementById("main");
    main.replaceChildren();
    await viewPlacement(main);
    document.getElementById("job").textContent = el.textContent;
    document.getElementById("job").id = "job-done";
  });
}

// -- policy --------------------------------------------------------------------------------------
async function viewPolicy(main) {
  main.append(h("h1", {}, "Placement policy"));
  const p = await guard(() => api("GET", "/v1/policy"));
  if (!p) return;
  const gutter = h("pre", { "aria-hidden": "true", id: "gutter" });
  const area = h("textarea", { id: "policy-text", spellcheck: "false", "aria-label": "Policy (YAML)", "aria-describedby": "policy-result" });
  area.value = p.text || "rules:\n  - name: everything\n    match: /**\n    copies: 1\n";
  const result = h("div", { id: "policy-result", "aria-live": "polite" });
  let errLine = null;
  const lines = () => {
    const n = area.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("div", { class: i + 1 === errLine ? "err" : null }, String(i + 1))));
  };
  area.addEventListener("input", () => { errLine = null; lines(); });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  lines();
  const show = (r, applied) => {
    errLine = r.line || null;
    lines();
    result.replaceChildren(
      r.valid ? h("p", { class: "ok", id: "policy-ok" }, applied || `Valid: ${r.rules} rule(s).`) : h("p", { class: "bad", id: "policy-error" }, r.error),
      ...(r.warnings || []).map((w) => h("p", { class: "bad warning" }, `warning: ${w}`)));
    if (errLine) {
      const offset = area.value.split("\n").slice(0, errLine - 1).join("\n").length + (errLine > 1 ? 1 : 0);
      area.setSelectionRange(offset, offset);
    }
  };
  const check = async () => guard(async () => { const r = await api("POST", "/v1/web/policy/check", { text: area.value }); show(r); return r; });
  const apply = async () => {
    const r = await check();
    if (!r || !r.valid) return;
    await guard(async () => {
      const done = await api("PUT", "/v1/policy", { text: area.value });
      show(r, `Applied: policy v${done.version}. The placement daemons pick it up at their next plan.`);
      say(`Policy v${done.version} applied`);
    });
  };
  main.append(h("p", { class: "muted" }, p.version ? `Current: v${p.version}.` : "No policy applied yet.",
    " Rules are checked as ", h("code", {}, "vdir policy check"), " checks them; errors name the line."),
  h("div", { class: "editor" }, gutter, area),
  h("p", { class: "toolbar" }, h("button", { type: "button", id: "policy-check", onclick: check }, "Check"),
    h("button", { type: "button", class: "primary", id: "policy-apply", onclick: apply }, "Apply")), result);
}

// -- compute -------------------------------------------------------------------------------------
async function viewCompute(main, params) {
  main.append(h("h1", {}, "Compute"));
  const vms = await guard(() => api("GET", "/v1/vms"));
  if (!vms) return;
  const rows = vms.items.map((vm) => h("tr", {}, td(vm.name), td(vm.state || ""), td(vm.provider || ""), td(vm.region || ""),
    td((vm.near || []).join(", "), "name"), td(vm.public_ip || vm.private_ip || "", "hide-narrow"),
    h("td", { class: "actions" }, h("button", { type: "button", class: "danger", "aria-label": `Delete VM ${vm.name}`, onclick: async () => {
      const got = await ask(`Delete VM ${vm.name}?`, [{ text: "The machine is stopped and removed." }], "Delete");
      if (!got) return;
      await guard(async () => { await api("DELETE", `/v1/vms/${encodeURIComponent(vm.name)}`); say(`Deleted ${vm.name}`); render(); });
    } }, "Delete"))));
  main.append(table(["Name", "State", "Provider", "Region", "Near", { label: "Address", cls: "hide-narrow" }, "Actions"], rows, { id: "vms" }));
  if (!vms.items.length) main.append(h("p", { class: "muted" }, "No VMs."));
  const near = h("input", { id: "vm-near", value: params.get("near") || "/", required: true });
  const provider = h("input", { id: "vm-provider", placeholder: "auto" });
  const region = h("input", { id: "vm-region", placeholder: "auto" });
  const name = h("input", { id: "vm-name", placeholder: "auto" });
  const decision = h("div", { id: "vm-decision", "aria-live": "polite" });
  const body = () => ({ near: [near.value], provider: provider.value || null, region: region.value || null, name: name.value || null });
  const boot = h("button", { type: "button", class: "primary", id: "vm-boot", disabled: true, onclick: async () => {
    await guard(async () => {
      const made = await api("POST", "/v1/vms", body());
      say(`Booted ${made.items.map((v) => v.name).join(", ")}`);
      render();
    });
  } }, "Boot");
  const plan = async (ev) => {
    ev.preventDefault();
    boot.disabled = true;
    await guard(async () => {
      const p = await api("POST", "/v1/web/vms/plan", body());
      const d = p.decision;
      decision.replaceChildren(h("p", { id: "vm-reason" }, h("strong", {}, `${p.provider} in ${p.region}: `), d.reason),
        table(["Cloud/region", { label: "Bytes", cls: "num" }, { label: "Files", cls: "num" }, "Backends"],
          d.sites.map((s) => h("tr", {}, td(`${s.cloud}/${s.region}`), td(fmtSize(s.bytes), "num"), td(String(s.files), "num"), td(s.backends.join(", "))))),
        ...[...(p.notes || [])].map((n) => h("p", { class: "muted" }, n)),
        p.blocked ? h("p", { class: "bad", id: "vm-blocked" }, `Cannot boot: ${p.blocked}`) : h("p", {}, `Would boot: ${p.names.join(", ")}`));
      boot.disabled = !!p.blocked;
    });
  };
  main.append(h("h2", {}, "Boot near a folder"),
    h("form", { class: "inline", onsubmit: plan },
      h("label", {}, "Near", near), h("label", {}, "Provider", provider), h("label", {}, "Region", region), h("label", {}, "Name", name),
      h("button", { type: "submit", id: "vm-plan" }, "Show decision (dry run)"), boot), decision);
}

// -- admin -----------------------------------------------------------------------------------------
function formOf(id, fields, label, submit) {
  const inputs = {};
  const form = h("form", { class: "inline", id, onsubmit: async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const [k, el] of Object.entries(inputs)) values[k] = el.type === "checkbox" ? el.checked : el.value.trim();
    await guard(async () => { await submit(values); render(); });
  } });
  for (const f of fields) {
    const el = f.options ? h("select", { name: f.name }, f.options.map((o) => h("option", { value: o }, o)))
      : h("input", { name: f.name, type: f.type || "text", placeholder: f.placeholder || "", required: f.required || false });
    inputs[f.name] = el;
    form.append(h("label", {}, f.label, el));
  }
  form.append(h("button", { type: "submit" }, label));
  return form;
}

function sizeOrNull(text) {
  if (!text) return null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?\s*$/i.exec(text);
  if (!m) throw new ApiError(400, { error: `${text}: not a size (e.g. 10G)` });
  return Math.round(parseFloat(m[1]) * 1024 ** " kmgtp".indexOf((m[2] || " ").toLowerCase()));
}

async function viewAdmin(main) {
  main.append(h("h1", {}, state.me.admin ? "Administration" : "Account"));
  const admin = state.me.admin;
  const [tokens, projects] = await Promise.all([guard(() => api("GET", "/v1/tokens")), guard(() => api("GET", "/v1/projects"))]);
  if (projects) {
    const usage = await Promise.all(projects.items.map((p) => api("GET", `/v1/projects/${encodeURIComponent(p.name)}/usage`).catch(() => null)));
    main.append(h("h2", {}, "Projects"), table(["Project", "Prefixes", "Members", { label: "Bytes used", cls: "num" }, { label: "Files", cls: "num" }, "Actions"],
      projects.items.map((p, n) => {
        const u = usage[n] || {};
        const members = Object.entries(p.members || {}).map(([k, v]) => `${k} (${v})`).join(", ");
        return h("tr", {}, td(p.name), td((p.prefixes || []).join(", "), "name"), td(members),
          td(`${fmtSize(u.bytes || 0)}${u.quota_bytes ? " of " + fmtSize(u.quota_bytes) : ""}`, "num"),
          td(`${u.files ?? ""}${u.quota_files ? " of " + u.quota_files : ""}`, "num"),
          h("td", { class: "actions" }, admin ? h("button", { type: "button", class: "danger", onclick: async () => {
            if (!(await ask(`Delete project ${p.name}?`, [{ text: "Its files stay; the project and its roles go." }], "Delete"))) return;
            await guard(async () => { await api("DELETE", `/v1/projects/${encodeURIComponent(p.name)}`); render(); });
          } }, "Delete") : null));
      }), { id: "projects" }));
    if (admin || projects.items.some((p) => (p.members || {})[state.me.user] === "owner")) {
      main.append(formOf("grant", [{ name: "project", label: "Project", required: true }, { name: "user", label: "User", required: true },
        { name: "role", label: "Role", options: ["viewer", "editor", "owner"] }], "Grant role",
      (v) => api("PUT", `/v1/projects/${encodeURIComponent(v.project)}/members/${encodeURIComponent(v.user)}`, { role: v.role })),
      formOf("revoke", [{ name: "project", label: "Project", required: true }, { name: "user", label: "User", required: true }], "Revoke role",
        (v) => api("DELETE", `/v1/projects/${encodeURIComponent(v.project)}/members/${encodeURIComponent(v.user)}`)));
    }
    if (admin) {
      main.append(formOf("project-create", [{ name: "name", label: "New project", required: true }, { name: "prefixes", label: "Prefixes", placeholder: "/projects/x", required: true },
        { name: "quota_bytes", label: "Quota", placeholder: "e.g. 100G" }, { name: "quota_files", label: "Files", type: "number" }], "Create project",
      (v) => api("POST", "/v1/projects", { name: v.name, prefixes: v.prefixes.split(/[\s,]+/).filter(Boolean),
        quota_bytes: sizeOrNull(v.quota_bytes), quota_files: v.quota_files ? Number(v.quota_files) : null })),
      formOf("quota", [{ name: "project", label: "Project", required: true }, { name: "bytes", label: "Quota", placeholder: "e.g. 100G (empty: none)" },
        { name: "files", label: "Files", type: "number" }], "Set quota",
      (v) => api("PUT", `/v1/projects/${encodeURIComponent(v.project)}/quota`, { bytes: sizeOrNull(v.bytes), files: v.files ? Number(v.files) : null })));
    }
  }
  if (admin) {
    const [users, backends, placed] = await Promise.all([guard(() => api("GET", "/v1/users")), guard(() => api("GET", "/v1/backends")),
      guard(() => api("GET", "/v1/placement/status"))]);
    const used = (placed && placed.backends) || {};
    if (backends) {
      main.append(h("h2", {}, "Backends"), table(["Name", "URL", "Cloud", "Region", "Tier", { label: "Replicas", cls: "num" }, { label: "Bytes", cls: "num" }, "Actions"],
        backends.items.map((b) => h("tr", {}, td(b.name + (b.default ? " (default)" : "")), td(b.url, "name"), td(b.cloud || ""), td(b.region || ""),
          td(b.tier || ""), td(String(b.replicas ?? ""), "num"), td(fmtSize((used[b.name] || {}).bytes || 0), "num"), h("td", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: async () => {
            if (!(await ask(`Remove backend ${b.name}?`, [{ text: "Refused while replicas are on it." }], "Remove"))) return;
            await guard(async () => { await api("DELETE", `/v1/backends/${encodeURIComponent(b.name)}`); render(); });
          } }, "Remove")))), { id: "backends" }),
      formOf("backend-add", [{ name: "name", label: "Name", required: true }, { name: "url", label: "URL", placeholder: "s3://bucket/prefix", required: true },
        { name: "cloud", label: "Cloud" }, { name: "region", label: "Region" }, { name: "tier", label: "Tier" }], "Add backend",
      (v) => api("POST", "/v1/backends", { name: v.name, url: v.url, cloud: v.cloud || null, region: v.region || null, tier: v.tier || null, check: true })));
    }
    if (users) {
      main.append(h("h2", {}, "Users"), table(["User", "Admin", "Actions"], users.items.map((u) => h("tr", {}, td(u.name), td(u.admin ? "yes" : ""),
        h("td", { class: "actions" }, u.name === state.me.user ? null : h("button", { type: "button", class: "danger", onclick: async () => {
          if (!(await ask(`Remove user ${u.name}?`, [{ text: "Their tokens are revoked and their roles dropped." }], "Remove"))) return;
          await guard(async () => { await api("DELETE", `/v1/users/${encodeURIComponent(u.name)}`); render(); });
        } }, "Remove")))), { id: "users" }),
      formOf("user-add", [{ name: "name", label: "New user", required: true }, { name: "admin", label: "Administrator", type: "checkbox" }], "Add user",
        (v) => api("POST", "/v1/users", { name: v.name, admin: v.admin })));
    }
  }
  if (tokens) {
    const secret = h("div", { id: "new-token" });
    main.append(h("h2", {}, "Tokens"), table(["Id", "User", "Name", "Scopes", "Expires", "State", "Actions"],
      tokens.items.map((t) => h("tr", {}, td(t.id), td(t.user), td(t.name || ""), td((t.scopes || []).join(", ")), td(t.expires ? fmtTime(t.expires) : "never"),
        td(t.revoked ? "revoked" : "active", t.revoked ? "muted" : "ok"), h("td", { class: "actions" }, t.revoked ? null : h("button", { type: "button", class: "danger", onclick: async () => {
          if (!(await ask(`Revoke token ${t.id}?`, [{ text: "Anything using it is refused from now on." }], "Revoke"))) return;
          await guard(async () => { await api("DELETE", `/v1/tokens/${encodeURIComponent(t.id)}`); render(); });
        } }, "Revoke")))), { id: "tokens" }));
    const form = formOf("token-create", [{ name: "name", label: "New token name" }, ...(admin ? [{ name: "user", label: "For user" }] : []),
      { name: "scopes", label: "Scopes", options: ["read,write", "read", ...(admin ? ["read,write,admin"] : [])] },
      { name: "days", label: "Days", type: "number", placeholder: "90" }], "Create token", async (v) => {
      const made = await api("POST", "/v1/tokens", { name: v.name, user: v.user || null, scopes: v.scopes.split(","),
        expires_in: (Number(v.days) || 90) * 86400 });
      sessionStorage.setItem("vdir.newtoken", made.secret);
    });
    main.append(form, secret);
    const fresh = sessionStorage.getItem("vdir.newtoken");
    if (fresh) {
      sessionStorage.removeItem("vdir.newtoken");
      secret.append(h("p", {}, "New token (shown once): "), h("p", { class: "secret" }, fresh));
    }
  }
}

// -- shell ---------------------------------------------------------------------------------------
const VIEWS = { files: viewFiles, trash: viewTrash, where: viewWhere, placement: viewPlacement, policy: viewPolicy,
                compute: viewCompute, admin: viewAdmin };
const ADMIN_ONLY = new Set(["placement", "policy", "compute"]);
let rendering = 0;

async function render() {
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const mine = ++rendering;
  const forHash = location.hash;  // which address this render shows (tests wait for it: data-hash)
  main.replaceChildren();
  delete main.dataset.view;
  delete main.dataset.hash;
  if (!state.token) {
    nav.hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("who").textContent = "";
    viewLogin(main);
    return;
  }
  if (!state.me) {
    try { state.me = await api("GET", "/v1/whoami", null, { login: true }); } catch (err) { logout(`Signed out: ${err.message}`); return; }
  }
  if (!state.projects) {
    try { state.projects = (await api("GET", "/v1/projects")).items; } catch (err) { state.projects = []; }
  }
  if (mine !== rendering) return;
  const r = route();
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a")) {
    a.hidden = a.hasAttribute("data-admin") && !state.me.admin;
    if (a.dataset.section === "admin") a.textContent = state.me.admin ? "Admin" : "Account";
    if (a.dataset.section === r.name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.getElementById("who").textContent = `${state.me.user}${state.me.admin ? " (admin)" : ""}`;
  document.getElementById("logout").hidden = false;
  const view = VIEWS[r.name];
  if (!view || (ADMIN_ONLY.has(r.name) && !state.me.admin)) {
    main.append(h("h1", { id: "not-found" }, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/files" }, "Files")));
    main.dataset.view = r.name;
    main.dataset.hash = forHash;
    return;
  }
  document.title = `vdir · ${r.name}`;
  main.setAttribute("aria-busy", "true");
  await view(main, r.params);
  if (mine === rendering) {
    main.removeAttribute("aria-busy");
    main.dataset.view = r.name;
    main.dataset.hash = forHash;
    main.dataset.ready = String(mine);
  }
}

window.addEventListener("hashchange", () => {
  // keyboard users keep their place: a control that changed the view (sort, order, pages) gets
  // the focus back; otherwise the new content does
  const had = document.activeElement && document.activeElement.id;
  say("");
  render().then(() => {
    const again = had && document.getElementById(had);
    if (again && again !== document.body) again.focus({ preventScroll: true });
    else document.getElementById("main").focus({ preventScroll: true });
  });
});
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => { state.projects = null; logout(""); location.hash = ""; });
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => ev.preventDefault());
  render();
});
