// medficient app page: three slice views on canvases, boxes -> masks, labels, propagation, save.
// All state lives on the server per tab (session id in sessionStorage); this file draws and asks.
"use strict";

const $ = (sel) => document.querySelector(sel);
const AXIS_NAMES = ["axial", "coronal", "sagittal"];
const FORMAT_NAMES = { npz: "challenge .npz (case)", png: "PNG label map", nifti: "NIfTI (.nii.gz)", nrrd: "NRRD (.nrrd)" };
const FORMAT_SUFFIX = { npz: ".npz", png: ".png", nifti: ".nii.gz", nrrd: ".nrrd" };
const CUSTOM_WINDOW = "custom window";

const app = { sid: null, config: null, summary: null, views: [], active: 0, selected: null, busy: false, jobTimer: null, embedTimer: null };

// -- talking to the server --------------------------------------------------------------------
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error("the medficient server does not answer (is `medficient serve` still running?)");
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.detail) || `${res.status} ${res.statusText}`);
  return data;
}
const sapi = (method, path, body) => api(method, `/api/s/${app.sid}${path}`, body);

function showMessage(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.title = text; // the line may be cut short on a narrow window
  box.className = kind;
  box.hidden = false;
  clearTimeout(showMessage.timer);
  if (kind === "info") showMessage.timer = setTimeout(() => { box.hidden = true; }, 5000);
}
async function guard(fn) {
  try { return await fn(); } catch (e) { showMessage(e.message); return undefined; }
}

// -- one slice view -------------------------------------------------------------------------------
class View {
  constructor(el) {
    this.el = el;
    this.axis = Number(el.dataset.axis);
    this.canvas = el.querySelector("canvas");
    this.ctx = this.canvas.getContext("2d");
    this.slider = el.querySelector(".slider");
    this.title = el.querySelector(".slice-no");
    this.index = 0;
    this.img = null;
    this.overlay = null;
    this.drag = null;
    this.slider.addEventListener("input", () => this.setIndex(Number(this.slider.value)));
    this.canvas.addEventListener("wheel", (e) => { e.preventDefault(); this.setIndex(this.index + (e.deltaY > 0 ? -1 : 1)); }, { passive: false });
    this.canvas.addEventListener("mousedown", (e) => this.down(e));
    this.canvas.addEventListener("mouseenter", () => setActive(this.axis));
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }
  get scan() { return app.summary && app.summary.scan; }
  get planeAxes() { return [0, 1, 2].filter((a) => a !== this.axis); } // [row axis, column axis]
  get rows() { return this.scan.shape[this.planeAxes[0]]; }
  get cols() { return this.scan.shape[this.planeAxes[1]]; }
  get flip() { return this.axis !== 0; } // coronal/sagittal: slice 0 (inferior) at the bottom
  get depth() { return this.scan.shape[this.axis]; }

  reset() {
    this.index = Math.floor(this.depth / 2);
    this.slider.max = this.depth - 1;
    this.slider.hidden = this.title.hidden = this.depth === 1;
    this.img = this.overlay = null;
    this.load();
  }
  setIndex(i, quiet = false) {
    if (!this.scan) return;
    i = Math.max(0, Math.min(this.depth - 1, i));
    if (i === this.index) return;
    this.index = i;
    this.load();
    if (!quiet) { setActive(this.axis); scheduleEmbed(); updatePropagateBox(); }
    redrawAll();
  }
  load() {
    if (!this.scan) return;
    const s = app.summary;
    const want = this.index;
    this.slider.value = want;
    this.title.textContent = `${want + 1} / ${this.depth}`;
    const img = new Image();
    img.onload = () => { if (this.index === want) { this.img = img; this.draw(); } };
    img.onerror = () => showMessage(`could not load ${AXIS_NAMES[this.axis]} slice ${want}`);
    img.src = `/api/s/${app.sid}/slice/${this.axis}/${want}.png?v=${s.scan_version}`;
    this.loadOverlay();
  }
  loadOverlay() {
    if (!this.scan) return;
    const want = this.index;
    const ov = new Image();
    ov.onload = () => { if (this.index === want) { this.overlay = ov; this.draw(); } };
    ov.src = `/api/s/${app.sid}/overlay/${this.axis}/${want}.png?v=${app.summary.scan_version}.${app.summary.edit_version}`;
  }
  layout() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    const sp = this.scan.spacing;
    const sy = sp[this.planeAxes[0]], sx = sp[this.planeAxes[1]];
    const k = Math.min(w / (this.cols * sx), h / (this.rows * sy));
    this.kx = k * sx; this.ky = k * sy;
    this.ox = (w - this.cols * this.kx) / 2;
    this.oy = (h - this.rows * this.ky) / 2;
    this.dpr = dpr;
  }
  // array (column, row) in pixel-edge units <-> canvas pixels
  toScreen(x, y) {
    return [this.ox + x * this.kx, this.oy + (this.flip ? this.rows - y : y) * this.ky];
  }
  toArray(e) {
    const r = this.canvas.getBoundingClientRect();
    const px = (e.clientX - r.left) * this.dpr, py = (e.clientY - r.top) * this.dpr;
    const x = (px - this.ox) / this.kx, yy = (py - this.oy) / this.ky;
    return { x, y: this.flip ? this.rows - yy : yy, px, py };
  }
  boxRect(box) { // inclusive pixel indices -> canvas rectangle
    const [ax, ay] = this.toScreen(box[0], box[1]);
    const [bx, by] = this.toScreen(box[2] + 1, box[3] + 1);
    return [Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay)];
  }
  objectsHere() {
    return app.summary.objects.filter((o) => o.axis === this.axis && o.index === this.index);
  }
  draw() {
    const ctx = this.ctx;
    if (!this.scan) { ctx.clearRect(0, 0, this.canvas.width, this.canvas.height); return; }
    this.layout();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.imageSmoothingEnabled = false;
    const t = this.flip ? [this.kx, 0, 0, -this.ky, this.ox, this.oy + this.rows * this.ky] : [this.kx, 0, 0, this.ky, this.ox, this.oy];
    if (this.img) { ctx.setTransform(...t); ctx.drawImage(this.img, 0, 0); }
    if (this.overlay) {
      ctx.setTransform(...t);
      ctx.globalAlpha = Number($("#opacity").value);
      ctx.drawImage(this.overlay, 0, 0);
      ctx.globalAlpha = 1;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    if (!this.scan.is_2d) this.drawCrosshair();
    const labels = Object.fromEntries(app.summary.labels.map((l) => [l.value, l]));
    for (const o of this.objectsHere()) {
      const sel = app.selected === o.id;
      ctx.strokeStyle = sel ? "#ffffff" : (labels[o.label] ? labels[o.label].color : "#ffff00");
      ctx.lineWidth = (sel ? 2.5 : 1.5) * this.dpr;
      ctx.setLineDash([]);
      ctx.strokeRect(...this.boxRect(o.box));
      if (sel) for (const [cx, cy] of this.corners(o.box)) ctx.fillRect(cx - 3 * this.dpr, cy - 3 * this.dpr, 6 * this.dpr, 6 * this.dpr);
    }
    if (this.drag && this.drag.box) {
      ctx.strokeStyle = "#ffff00";
      ctx.lineWidth = 1.5 * this.dpr;
      ctx.setLineDash([5 * this.dpr, 4 * this.dpr]);
      ctx.strokeRect(...this.boxRect(this.drag.box));
      ctx.setLineDash([]);
    }
  }
  drawCrosshair() {
    const ctx = this.ctx;
    const [ra, ca] = this.planeAxes;
    const [x] = this.toScreen(app.views[ca].index + 0.5, 0);
    const [, y] = this.toScreen(0, app.views[ra].index + 0.5);
    const [x0, y0] = this.toScreen(0, 0), [x1, y1] = this.toScreen(this.cols, this.rows);
    ctx.strokeStyle = "rgba(91,141,239,0.45)";
    ctx.lineWidth = 1 * this.dpr;
    ctx.beginPath();
    ctx.moveTo(x, Math.min(y0, y1)); ctx.lineTo(x, Math.max(y0, y1));
    ctx.moveTo(Math.min(x0, x1), y); ctx.lineTo(Math.max(x0, x1), y);
    ctx.stroke();
  }
  corners(box) {
    const [x, y, w, h] = this.boxRect(box);
    return [[x, y], [x + w, y], [x, y + h], [x + w, y + h]];
  }
  clampBox(a, b) {
    const cx = (v) => Math.max(0, Math.min(this.cols - 1, Math.floor(v)));
    const cy = (v) => Math.max(0, Math.min(this.rows - 1, Math.floor(v)));
    return [cx(Math.min(a.x, b.x)), cy(Math.min(a.y, b.y)), cx(Math.max(a.x, b.x)), cy(Math.max(a.y, b.y))];
  }
  down(e) {
    if (!this.scan || e.button !== 0 || app.busy) return;
    e.preventDefault();
    setActive(this.axis);
    const p = this.toArray(e);
    // a corner of a box on this slice: adjust that box
    for (const o of this.objectsHere()) {
      const hit = this.corners(o.box).findIndex(([cx, cy]) => Math.hypot(cx - p.px, cy - p.py) < 9 * this.dpr);
      if (hit >= 0) {
        const b = o.box; // the opposite corner stays
        const fixed = { x: hit % 2 === 0 ? b[2] + 0.5 : b[0] + 0.5, y: hit < 2 ? (this.flip ? b[1] + 0.5 : b[3] + 0.5) : (this.flip ? b[3] + 0.5 : b[1] + 0.5) };
        app.selected = o.id;
        this.drag = { start: fixed, resize: o.id, moved: true, box: this.clampBox(fixed, p) };
        break;
      }
    }
    if (!this.drag) this.drag = { start: p, startPx: [p.px, p.py], moved: false, box: null };
    const move = (ev) => {
      const q = this.toArray(ev);
      if (!this.drag.moved && Math.hypot(q.px - this.drag.startPx[0], q.py - this.drag.startPx[1]) < 4 * this.dpr) return;
      this.drag.moved = true;
      this.drag.box = this.clampBox(this.drag.start, q);
      this.draw();
    };
    const up = (ev) => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      const drag = this.drag;
      this.drag = null;
      if (!drag.moved) { this.click(this.toArray(ev)); return; }
      const box = drag.box;
      if (!box || box[2] - box[0] < 2 || box[3] - box[1] < 2) { this.draw(); return; }
      if (drag.resize) editBox(drag.resize, box); else if (correcting(this)) correctSlice(this, box); else addBox(this, box);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }
  click(p) {
    const col = Math.floor(p.x), row = Math.floor(p.y);
    const inside = this.objectsHere().filter((o) => col >= o.box[0] && col <= o.box[2] && row >= o.box[1] && row <= o.box[3]);
    if (inside.length) {
      inside.sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
      select(inside[0].id);
      return;
    }
    if (this.scan.is_2d || col < 0 || row < 0 || col >= this.cols || row >= this.rows) { select(null); return; }
    const [ra, ca] = this.planeAxes; // move the other views to the clicked point
    app.views[ra].setIndex(row, true);
    app.views[ca].setIndex(col, true);
    redrawAll();
  }
}

function setActive(axis) {
  if (app.active === axis) return;
  app.active = axis;
  for (const v of app.views) v.el.classList.toggle("active", v.axis === axis);
  scheduleEmbed();
}
function redrawAll() { for (const v of app.views) v.draw(); }
function reloadOverlays() { for (const v of app.views) v.loadOverlay(); }

// The shown slice of the active view is encoded in the background, so a box only needs the decoder.
function scheduleEmbed() {
  clearTimeout(app.embedTimer);
  if (!app.summary || !app.summary.scan) return;
  app.embedTimer = setTimeout(() => {
    const v = app.views[app.active];
    sapi("POST", "/embed", { axis: v.axis, index: v.index, model: $("#model").value }).catch(() => {});
  }, 250);
}

// -- edits ---------------------------------------------------------------------------------------
function activeLabel() {
  const checked = document.querySelector("input[name=active-label]:checked");
  return checked ? Number(checked.value) : app.summary.labels[0].value;
}
async function withBusy(fn) {
  app.busy = true;
  document.body.style.cursor = "progress";
  try { return await guard(fn); } finally { app.busy = false; document.body.style.cursor = ""; }
}
async function addBox(view, box) {
  await withBusy(async () => {
    const t0 = performance.now();
    const res = await sapi("POST", "/objects", { axis: view.axis, index: view.index, box, label: activeLabel(), model: $("#model").value });
    app.selected = res.object.id;
    setSummary(res);
    showMessage(`mask of ${res.object.voxels} pixels in ${((performance.now() - t0) / 1000).toFixed(2)} s` + (res.timing.embedding_cached ? "" : " (slice encoded first)"), "info");
  });
  redrawAll();
}
async function editBox(oid, box) {
  await withBusy(async () => {
    const res = await sapi("PUT", `/objects/${oid}`, { box, model: $("#model").value });
    setSummary(res);
  });
  redrawAll();
}
// "correct" mode: a box on a propagated slice of the selected object replaces its mask there
function correcting(view) {
  const o = selectedObject();
  return $("#correct-mode").checked && !!o && !!o.span && o.axis === view.axis && view.index >= o.span[0] && view.index <= o.span[1];
}
async function correctSlice(view, box) {
  const oid = app.selected;
  await withBusy(async () => {
    setSummary(await sapi("PUT", `/objects/${oid}`, { box, index: view.index, model: $("#model").value }));
    showMessage(`corrected ${AXIS_NAMES[view.axis]} slice ${view.index} of object #${oid}`, "info");
  });
  redrawAll();
}
async function deleteObject(oid) {
  await withBusy(async () => { setSummary(await sapi("DELETE", `/objects/${oid}`)); if (app.selected === oid) select(null); });
}
async function undo() {
  await withBusy(async () => setSummary(await sapi("POST", "/undo")));
}
function select(oid) {
  app.selected = oid;
  const o = selectedObject();
  if (o) { const v = app.views[o.axis]; if (v.index !== o.index) v.setIndex(o.index); setActive(o.axis); }
  renderObjects();
  app.rangeFor = oid;
  resetPropagateRange();
  redrawAll();
}
function selectedObject() {
  return app.summary && app.summary.objects.find((o) => o.id === app.selected);
}

// -- propagation -----------------------------------------------------------------------------------
function resetPropagateRange() {
  const o = selectedObject();
  if (!o || app.summary.scan.is_2d) return;
  const n = app.summary.scan.shape[o.axis];
  const [a, b] = o.span || [Math.max(0, o.index - 10), Math.min(n - 1, o.index + 10)];
  $("#prop-first").value = a;
  $("#prop-last").value = b;
  updatePropagateBox();
}
function updatePropagateBox() {
  const o = selectedObject();
  const running = app.summary && app.summary.job && app.summary.job.state === "running";
  $("#propagate-box").hidden = !(app.summary && app.summary.scan && !app.summary.scan.is_2d && (o || running));
  $("#correct-row").hidden = !(o && o.span);
  if (!o) return;
  const a = Number($("#prop-first").value), b = Number($("#prop-last").value);
  const mid = Math.floor((b - a) / 2 + a);
  $("#prop-note").textContent = `${AXIS_NAMES[o.axis]} slices ${a}..${b}. As in the challenge's 3D algorithm, the box is used on the middle slice (${mid})` +
    (mid !== o.index ? `, not on slice ${o.index} where it was drawn` : "") + ", then carried up and down.";
}
async function propagate() {
  const o = selectedObject();
  if (!o) return;
  await guard(async () => {
    const job = await sapi("POST", `/objects/${o.id}/propagate`, { first: Number($("#prop-first").value), last: Number($("#prop-last").value), model: $("#model").value });
    showJob(job);
    pollJob();
  });
}
function showJob(job) {
  $("#job").hidden = false;
  $("#job-progress").max = Math.max(1, job.total);
  $("#job-progress").value = job.done;
  const text = { running: `${job.done} / ${job.total} slices`, done: `done in ${job.seconds} s`, cancelled: job.message || "cancelled", failed: `failed: ${job.message}` }[job.state];
  $("#job-text").textContent = text;
  $("#btn-cancel").hidden = job.state !== "running";
  $("#btn-propagate").disabled = job.state === "running";
}
function pollJob() {
  clearTimeout(app.jobTimer);
  app.jobTimer = setTimeout(async () => {
    let job;
    try { job = await sapi("GET", "/job"); } catch (e) { showMessage(e.message); return; }
    showJob(job);
    if (job.state === "running") { pollJob(); return; }
    if (job.state === "failed") showMessage(`propagation failed: ${job.message}`);
    else if (job.state === "cancelled") showMessage(`propagation stopped: ${job.message}`, "info");
    else showMessage(`propagated over ${job.total} slices in ${job.seconds} s`, "info");
    await guard(async () => setSummary(await sapi("GET", "")));
  }, 300);
}

// -- labels and objects lists -------------------------------------------------------------------
function renderLabels() {
  const ul = $("#labels");
  const current = document.querySelector("input[name=active-label]:checked");
  const keep = current ? Number(current.value) : null;
  ul.replaceChildren();
  for (const l of app.summary.labels) {
    const li = document.createElement("li");
    li.innerHTML = `<input type="radio" name="active-label" title="draw new boxes with this label"><input type="color" title="colour"><input type="text" maxlength="64" title="name"><button title="delete the label and its objects">✕</button>`;
    const [radio, color, name, del] = li.children;
    radio.value = l.value;
    radio.checked = keep === null ? l === app.summary.labels[0] : keep === l.value;
    color.value = l.color;
    name.value = l.name;
    color.addEventListener("change", () => guard(async () => setSummary(await sapi("PATCH", `/labels/${l.value}`, { color: color.value }))));
    name.addEventListener("change", () => guard(async () => setSummary(await sapi("PATCH", `/labels/${l.value}`, { name: name.value }))));
    del.addEventListener("click", () => guard(async () => setSummary(await sapi("DELETE", `/labels/${l.value}`))));
    ul.append(li);
  }
  if (!document.querySelector("input[name=active-label]:checked") && ul.firstChild) ul.firstChild.firstChild.checked = true;
}
function renderObjects() {
  const ul = $("#objects");
  ul.replaceChildren();
  const labels = Object.fromEntries(app.summary.labels.map((l) => [l.value, l]));
  for (const o of app.summary.objects) {
    const li = document.createElement("li");
    li.classList.toggle("selected", o.id === app.selected);
    const where = app.summary.scan.is_2d ? "" : o.span ? ` ${AXIS_NAMES[o.axis]} ${o.span[0]}..${o.span[1]}` : ` ${AXIS_NAMES[o.axis]} slice ${o.index}`;
    li.innerHTML = `<span class="swatch"></span><span class="desc"></span><button title="delete">✕</button>`;
    li.children[0].style.background = labels[o.label] ? labels[o.label].color : "#888";
    li.children[1].textContent = `#${o.id} ${labels[o.label] ? labels[o.label].name : ""}${where} (${o.voxels} px)`;
    li.addEventListener("click", () => select(o.id));
    li.children[2].addEventListener("click", (e) => { e.stopPropagation(); deleteObject(o.id); });
    ul.append(li);
  }
  $("#btn-undo").disabled = !app.summary.can_undo;
}

// -- whole-state refresh -------------------------------------------------------------------------
function setSummary(s) {
  const old = app.summary;
  app.summary = s;
  const scan = s.scan;
  $("#empty-hint").hidden = !!scan;
  $("#views").classList.toggle("single", !!(scan && scan.is_2d));
  for (const id of ["#btn-add-label", "#btn-save", "#save-format", "#save-path"]) $(id).disabled = !scan;
  if (!scan) { renderLabels(); renderObjects(); redrawAll(); return; }
  const newScan = !old || !old.scan || old.scan_version !== s.scan_version;
  if (newScan) {
    $("#scan-name").textContent = `${scan.name}  (${scan.shape.slice(scan.is_2d ? 1 : 0).join(" × ")}${scan.rgb ? " RGB" : ""})`;
    const preset = $("#preset");
    preset.replaceChildren(...scan.presets.map((p) => new Option(p, p)));
    preset.value = scan.preset;
    preset.disabled = scan.presets.length < 2;
    $("#window-box").hidden = scan.preset !== CUSTOM_WINDOW;
    if (scan.window) { $("#win-w").value = scan.window[0]; $("#win-l").value = scan.window[1]; }
    $("#intensity-note").textContent = (scan.modality ? scan.modality + ": " : "") + scan.intensity;
    if (scan.notes && scan.notes.length) showMessage(scan.notes.join("; "), "info");
    const fmt = $("#save-format");
    const prev = fmt.value;
    fmt.replaceChildren(...scan.formats.map((f) => new Option(FORMAT_NAMES[f] || f, f)));
    if (scan.formats.includes(prev)) fmt.value = prev;
    setSavePath();
    if (!old || !old.scan || old.scan.name !== scan.name || String(old.scan.shape) !== String(scan.shape)) {
      for (const v of app.views) if (!(scan.is_2d && v.axis !== 0)) v.reset();
      app.selected = null;
    } else {
      for (const v of app.views) if (!(scan.is_2d && v.axis !== 0)) v.load();
    }
    scheduleEmbed();
  } else if (!old || old.edit_version !== s.edit_version) {
    reloadOverlays();
  }
  if (app.selected !== null && !selectedObject()) app.selected = null;
  if (app.rangeFor !== app.selected) { app.rangeFor = app.selected; resetPropagateRange(); }
  renderLabels();
  renderObjects();
  updatePropagateBox();
  if (s.job) showJob(s.job);
  redrawAll();
}
function setSavePath() {
  const scan = app.summary.scan;
  const stem = scan.name.replace(/(\.nii\.gz|\.nii|\.nrrd|\.npz|\.png|\.jpe?g|\.tiff?|\.bmp|\.mh[ad])$/i, "");
  $("#save-path").value = `segmentations/${stem}_labels${FORMAT_SUFFIX[$("#save-format").value] || ""}`;
}

// -- files: data folder browser, uploads, save -------------------------------------------------
async function browse(dir = "") {
  const listing = await guard(() => api("GET", `/api/files?dir=${encodeURIComponent(dir)}`));
  if (!listing) return;
  const dlg = $("#browser");
  dlg.dataset.dir = listing.dir;
  $("#browser-dir").textContent = "/" + listing.dir;
  const ul = $("#browser-list");
  ul.replaceChildren();
  const entries = listing.parent !== null ? [{ name: "..", path: listing.parent, dir: true }, ...listing.entries] : listing.entries;
  for (const e of entries) {
    const li = document.createElement("li");
    li.textContent = (e.dir ? "📁 " : "📄 ") + e.name;
    li.addEventListener("click", () => { if (e.dir) browse(e.path); else { dlg.close(); openPath(e.path); } });
    ul.append(li);
  }
  $("#btn-open-folder").hidden = listing.dir === "";
  if (!dlg.open) dlg.showModal();
}
async function openPath(path) {
  showMessage(`opening ${path} …`, "info");
  await withBusy(async () => {
    setSummary(await sapi("POST", "/open", { path }));
    showMessage(`opened ${path}`, "info");
  });
}
function safeName(name, i) {
  const clean = name.replace(/[^A-Za-z0-9._ -]/g, "_").replace(/^[^A-Za-z0-9]+/, "");
  return (i === undefined ? "" : `${String(i).padStart(5, "0")}_`) + (clean || "file");
}
function uploadOne(file, name, batch) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/s/${app.sid}/upload?name=${encodeURIComponent(name)}` + (batch ? `&batch=${batch}` : ""));
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) showMessage(`uploading ${file.name}: ${Math.round((100 * e.loaded) / e.total)} %`, "info"); };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new Error((data && data.detail) || `upload failed (${xhr.status})`));
    };
    xhr.onerror = () => reject(new Error("upload failed: the server does not answer"));
    xhr.send(file);
  });
}
async function uploadFiles(files, asFolder) {
  files = Array.from(files);
  if (!files.length) return;
  const limit = app.config.max_upload_mb * 1024 * 1024;
  const total = files.reduce((n, f) => n + f.size, 0);
  if (total > limit) { showMessage(`${asFolder ? "folder" : files[0].name} is ${(total / 1048576).toFixed(0)} MB, above the upload limit of ${app.config.max_upload_mb} MB`); return; }
  await guard(async () => {
    let batch = null, res = null;
    for (const [i, f] of files.entries()) {
      res = await uploadOne(f, asFolder ? safeName(f.name, i) : safeName(f.name), batch);
      batch = res.batch;
    }
    await openPath(asFolder ? res.folder : res.path);
  });
}
async function save() {
  await withBusy(async () => {
    const res = await sapi("POST", "/save", { format: $("#save-format").value, path: $("#save-path").value || null });
    const p = $("#save-result");
    p.replaceChildren(document.createTextNode(`saved to ${res.path} `));
    const a = document.createElement("a");
    a.href = res.download;
    a.textContent = "download";
    a.download = "";
    p.append(a);
    showMessage(`saved ${res.path}`, "info");
  });
}

// -- start ---------------------------------------------------------------------------------------
// A duplicated browser tab inherits its source's sessionStorage, session id included: before
// reusing a saved id, ask the other open tabs whether one of them holds it (a reload finds none).
const tabs = new BroadcastChannel("medficient-tabs");
tabs.addEventListener("message", (e) => { if (e.data.ask && e.data.ask === app.sid) tabs.postMessage({ held: app.sid }); });

function heldByAnotherTab(sid) {
  return new Promise((resolve) => {
    const done = (held) => { clearTimeout(timer); tabs.removeEventListener("message", onReply); resolve(held); };
    const onReply = (e) => { if (e.data.held === sid) done(true); };
    const timer = setTimeout(() => done(false), 250);
    tabs.addEventListener("message", onReply);
    tabs.postMessage({ ask: sid });
  });
}

async function start() {
  app.views = [...document.querySelectorAll(".view")].map((el) => new View(el));
  app.views[0].el.classList.add("active");
  app.config = await guard(() => api("GET", "/api/config"));
  if (!app.config) return;
  $("#model").replaceChildren(...app.config.models.map((m) => new Option(m, m)));
  $("#model").value = app.config.default_model;
  $("#backend").textContent = `${app.config.backend}${app.config.precision === "f32" ? "" : " " + app.config.precision}`;
  let summary = null;
  const saved = sessionStorage.getItem("medficient-session");
  if (saved && !(await heldByAnotherTab(saved))) { app.sid = saved; summary = await api("GET", `/api/s/${saved}`).catch(() => null); }
  if (!summary) { summary = await guard(() => api("POST", "/api/sessions")); if (!summary) return; }
  app.sid = summary.session;
  sessionStorage.setItem("medficient-session", app.sid);
  setSummary(summary);
  if (summary.job && summary.job.state === "running") pollJob();

  $("#btn-browse").addEventListener("click", () => browse($("#browser").dataset.dir || ""));
  $("#btn-open-folder").addEventListener("click", () => { $("#browser").close(); openPath($("#browser").dataset.dir); });
  $("#upload-file").addEventListener("change", (e) => { uploadFiles(e.target.files, false); e.target.value = ""; });
  $("#upload-folder").addEventListener("change", (e) => { uploadFiles(e.target.files, true); e.target.value = ""; });
  $("#btn-add-label").addEventListener("click", () => guard(async () => {
    const res = await sapi("POST", "/labels", {});
    setSummary(res);
    const radio = [...document.querySelectorAll("input[name=active-label]")].find((r) => Number(r.value) === res.label.value);
    if (radio) radio.checked = true;
  }));
  $("#btn-undo").addEventListener("click", undo);
  $("#btn-propagate").addEventListener("click", propagate);
  $("#btn-cancel").addEventListener("click", () => guard(async () => showJob(await sapi("POST", "/job/cancel"))));
  $("#btn-first-here").addEventListener("click", () => { const o = selectedObject(); if (o) { $("#prop-first").value = app.views[o.axis].index; updatePropagateBox(); } });
  $("#btn-last-here").addEventListener("click", () => { const o = selectedObject(); if (o) { $("#prop-last").value = app.views[o.axis].index; updatePropagateBox(); } });
  for (const id of ["#prop-first", "#prop-last"]) $(id).addEventListener("input", updatePropagateBox);
  $("#opacity").addEventListener("input", redrawAll);
  $("#save-format").addEventListener("change", setSavePath);
  $("#btn-save").addEventListener("click", save);
  $("#model").addEventListener("change", scheduleEmbed);
  $("#preset").addEventListener("change", () => {
    const preset = $("#preset").value;
    $("#window-box").hidden = preset !== CUSTOM_WINDOW;
    if (preset !== CUSTOM_WINDOW) withBusy(async () => setSummary(await sapi("POST", "/preset", { preset })));
  });
  $("#btn-window").addEventListener("click", () => withBusy(async () =>
    setSummary(await sapi("POST", "/preset", { preset: CUSTOM_WINDOW, window: [Number($("#win-w").value), Number($("#win-l").value)] }))));
  window.addEventListener("keydown", (e) => {
    if (e.target.matches("input[type=text], input[type=number], select")) return;
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
    else if ((e.key === "Delete" || e.key === "Backspace") && app.selected !== null) deleteObject(app.selected);
    else if (e.key === "ArrowUp" || e.key === "PageUp") app.views[app.active].setIndex(app.views[app.active].index + 1);
    else if (e.key === "ArrowDown" || e.key === "PageDown") app.views[app.active].setIndex(app.views[app.active].index - 1);
  });
}
start();
