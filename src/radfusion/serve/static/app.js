/* radfusion serve: the scoring page. Vanilla JS, no external code. */
"use strict";
(function () {
  const info = JSON.parse(document.getElementById("bundle-info").textContent);
  const [NEG, POS] = info.class_names;
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const state = {
    file: null, img: null, width: 0, height: 0, zoom: 1,
    mode: "polygon", points: [], closed: false, drawing: false, drag: -1, cursor: null,
    maskFile: null, maskImg: null, history: [], area: null, tiny: false,
  };
  window.radfusion = { state: state };  // read by the end-to-end test

  // ---------- helpers ----------
  function showError(msg) {
    const box = $("error");
    box.textContent = msg || "";
    box.hidden = !msg;
  }
  async function post(url, form) {
    const res = await fetch(url, { method: "POST", body: form, credentials: "same-origin" });
    const type = res.headers.get("content-type") || "";
    const body = type.includes("json") ? await res.json() : await res.text();
    if (!res.ok) throw new Error((body && body.error) || ("server answered " + res.status));
    return body;
  }
  function fmt(x, d) { return (x === null || x === undefined || Number.isNaN(x)) ? "—" : Number(x).toFixed(d); }
  // probability and threshold with as many digits as it takes for them not to look equal
  // when they differ (a "P 1.000 / threshold 1.000" that calls APT/PC reads as a contradiction)
  function pair(p, t) {
    for (let d = 3; d <= 10; d++) {
      const a = Number(p).toFixed(d), b = Number(t).toFixed(d);
      if (a !== b || p === t) return [a, b];
    }
    return [String(p), String(t)];
  }
  const fields_info = Object.fromEntries(info.clinical.map((f) => [f.name, f]));
  function plain(name) { const f = fields_info[name]; return f ? f.label : name; }
  function withUnit(name, v) { const f = fields_info[name]; return v + (f && f.unit ? " " + f.unit : ""); }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  const modelInfo = Object.fromEntries(info.models.map((m) => [m.model, m]));

  // ---------- readiness: the server loads the models in the background ----------
  async function watchModels() {
    const box = $("model-status");
    for (let i = 0; i < 600; i++) {
      try {
        const h = await (await fetch("/api/health", { credentials: "same-origin" })).json();
        if (h.ready) {
          box.textContent = "Models ready (" + h.models + ", loaded in " + h.loaded_after_s + " s).";
          box.dataset.ready = "true";
          return;
        }
        if (h.error) { box.textContent = h.error; box.classList.add("error"); return; }
        box.textContent = "Loading the models (" + Math.round(h.loading_for_s) + " s)… you can load the image and outline the lesion meanwhile; scoring waits for them.";
      } catch (e) { box.textContent = "The server does not answer: is radfusion serve still running?"; }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  watchModels();

  // ---------- image loading ----------
  async function loadImage(file) {
    showError("");
    const form = new FormData();
    form.append("image", file);
    $("roi-status").textContent = "reading the image…";
    try {
      const out = await post("/api/image", form);
      const img = new Image();
      img.onload = () => {
        Object.assign(state, { file: file, img: img, width: out.width, height: out.height });
        resetRoi(false);
        $("drop").hidden = true;
        $("viewer").hidden = false;
        $("image-size").textContent = out.width + " × " + out.height + " px";
        fit();
        $("result").hidden = true;
      };
      img.src = out.image;
    } catch (e) { showError(e.message); $("roi-status").textContent = ""; }
  }
  for (const id of ["image-file", "image-file-2"]) {
    $(id).addEventListener("change", (e) => { if (e.target.files[0]) loadImage(e.target.files[0]); e.target.value = ""; });
  }
  const drop = $("drop");
  for (const t of [drop, $("canvas-wrap")]) {
    t.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    t.addEventListener("dragleave", () => drop.classList.remove("over"));
    t.addEventListener("drop", (e) => {
      e.preventDefault(); drop.classList.remove("over");
      if (e.dataTransfer.files[0]) loadImage(e.dataTransfer.files[0]);
    });
  }

  // ---------- zoom ----------
  function setZoom(z) {
    state.zoom = Math.min(16, Math.max(0.05, z));
    $("zoom-label").textContent = Math.round(state.zoom * 100) + "%";
    draw();
  }
  function fit() {
    // the whole image: as wide as the viewer and no taller than its maximum height
    const wrap = $("canvas-wrap");
    const availW = Math.max(100, wrap.clientWidth - 4);
    const availH = Math.max(100, parseFloat(getComputedStyle(wrap).maxHeight) || window.innerHeight * 0.7) - 4;
    setZoom(Math.min(4, availW / state.width, availH / state.height));
  }
  $("zoom-in").onclick = () => setZoom(state.zoom * 1.25);
  $("zoom-out").onclick = () => setZoom(state.zoom / 1.25);
  $("zoom-fit").onclick = fit;
  $("zoom-1").onclick = () => setZoom(1);
  $("canvas-wrap").addEventListener("wheel", (e) => {
    if (!e.ctrlKey && !e.metaKey) return;  // plain wheel scrolls; Ctrl+wheel zooms
    e.preventDefault();
    setZoom(state.zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15));
  }, { passive: false });

  // ---------- drawing ----------
  function draw() {
    if (!state.img) return;
    const z = state.zoom;
    canvas.width = Math.round(state.width * z);
    canvas.height = Math.round(state.height * z);
    ctx.imageSmoothingEnabled = z < 1;
    ctx.drawImage(state.img, 0, 0, canvas.width, canvas.height);
    if (state.maskImg) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(state.maskImg, 0, 0, canvas.width, canvas.height);
    }
    const pts = state.points;
    if (pts.length) {
      ctx.beginPath();
      ctx.moveTo(pts[0][0] * z, pts[0][1] * z);
      for (const p of pts.slice(1)) ctx.lineTo(p[0] * z, p[1] * z);
      if (state.closed) ctx.closePath();
      else if (state.cursor && state.mode === "polygon") ctx.lineTo(state.cursor[0] * z, state.cursor[1] * z);
      if (state.closed) { ctx.fillStyle = "rgba(40, 220, 90, 0.18)"; ctx.fill(); }
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#22e06a";
      ctx.stroke();
      if (state.mode === "polygon" || state.closed) {
        ctx.fillStyle = "#ffffff";
        const step = pts.length > 60 ? Math.ceil(pts.length / 60) : 1;
        pts.forEach((p, i) => {
          if (i % step && !(i === 0)) return;
          ctx.fillRect(p[0] * z - 3, p[1] * z - 3, 6, 6);
        });
        if (!state.closed) { ctx.strokeStyle = "#ffcc00"; ctx.strokeRect(pts[0][0] * z - 5, pts[0][1] * z - 5, 10, 10); }
      }
    }
  }
  function toImage(e) {
    const r = canvas.getBoundingClientRect();
    const x = (e.clientX - r.left) * state.width / r.width;
    const y = (e.clientY - r.top) * state.height / r.height;
    return [Math.min(state.width, Math.max(0, x)), Math.min(state.height, Math.max(0, y))];
  }
  function near(p, q) { return Math.hypot(p[0] - q[0], p[1] - q[1]) * state.zoom <= 8; }
  function snapshot() { return { points: state.points.map((p) => p.slice()), closed: state.closed, maskFile: state.maskFile, maskImg: state.maskImg }; }
  function remember() { state.history.push(snapshot()); if (state.history.length > 200) state.history.shift(); }
  function restore(s) { Object.assign(state, { points: s.points, closed: s.closed, maskFile: s.maskFile, maskImg: s.maskImg }); changed(); }
  function resetRoi(keep) {
    if (keep) remember(); else state.history = [];
    Object.assign(state, { points: [], closed: false, maskFile: null, maskImg: null, area: null, tiny: false });
    changed();
  }
  function closePolygon() {
    if (state.points.length >= 3 && !state.closed) { remember(); state.closed = true; changed(); }
  }
  canvas.addEventListener("mousedown", (e) => {
    if (!state.img || e.button !== 0) return;
    const p = toImage(e);
    if (state.closed) {
      const i = state.points.findIndex((q) => near(p, q));
      if (i >= 0) { remember(); state.drag = i; }
      return;
    }
    if (state.maskImg) { remember(); state.maskImg = null; state.maskFile = null; }
    if (state.mode === "freehand") {
      remember(); state.points = [p]; state.drawing = true; draw(); return;
    }
    if (state.points.length >= 3 && near(p, state.points[0])) { closePolygon(); return; }
    remember(); state.points.push(p); draw();
  });
  canvas.addEventListener("mousemove", (e) => {
    if (!state.img) return;
    const p = toImage(e);
    state.cursor = p;
    if (state.drag >= 0) { state.points[state.drag] = p; draw(); return; }
    if (state.drawing) {
      const last = state.points[state.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 1) state.points.push(p);
    }
    draw();
  });
  window.addEventListener("mouseup", () => {
    if (state.drag >= 0) { state.drag = -1; changed(); }
    if (state.drawing) {
      state.drawing = false;
      if (state.points.length >= 3) { state.closed = true; changed(); } else { restore(state.history.pop()); }
    }
  });
  canvas.addEventListener("dblclick", (e) => { e.preventDefault(); if (state.mode === "polygon") closePolygon(); });
  canvas.addEventListener("mouseleave", () => { state.cursor = null; draw(); });
  for (const b of document.querySelectorAll("button.mode")) {
    b.onclick = () => {
      state.mode = b.dataset.mode;
      for (const o of document.querySelectorAll("button.mode")) {
        o.classList.toggle("active", o === b); o.setAttribute("aria-pressed", String(o === b));
      }
      draw();
    };
  }
  $("undo").onclick = () => { if (state.history.length) restore(state.history.pop()); };
  $("clear").onclick = () => resetRoi(true);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && !e.target.closest("input,select")) { e.preventDefault(); $("undo").click(); }
    if (e.key === "Enter" && state.mode === "polygon" && !e.target.closest("input,select")) closePolygon();
  });
  $("mask-file").addEventListener("change", async (e) => {
    const f = e.target.files[0]; e.target.value = "";
    if (!f || !state.file) return;
    remember();
    Object.assign(state, { points: [], closed: false, maskFile: f, maskImg: null });
    changed();
  });
  $("save-roi").onclick = async () => {
    if (!state.closed) { showError("Close the outline first (click its first point)."); return; }
    const form = new FormData();
    form.append("roi", JSON.stringify(state.points));
    const res = await fetch("/api/roi?format=imagej", { method: "POST", body: form });
    if (!res.ok) { showError("could not save the outline"); return; }
    const a = el("a", { href: URL.createObjectURL(await res.blob()), download: "lesion.roi" });
    document.body.append(a); a.click(); a.remove();
  };

  // ---------- ROI area ----------
  let areaSeq = 0;
  async function changed() {
    draw();
    const ready = state.closed || !!state.maskFile;
    $("score").disabled = !ready;
    if (!ready) {
      state.area = null;
      $("roi-status").textContent = state.points.length ? "Outline open: click the first point (or double-click) to close it." : "No outline yet: click around the lesion border.";
      $("roi-status").className = "roi-status";
      return;
    }
    const seq = ++areaSeq;
    const form = new FormData();
    if (state.maskFile) { form.append("image", state.file); form.append("mask", state.maskFile); }
    else { form.append("roi", JSON.stringify(state.points)); form.append("width", state.width); form.append("height", state.height); }
    try {
      const out = await post("/api/roi", form);
      if (seq !== areaSeq) return;
      state.area = out.area_px; state.tiny = out.tiny;
      if (state.maskFile && !state.maskImg) {
        const m = new Image(); m.onload = () => { state.maskImg = m; draw(); }; m.src = out.overlay;
      }
      $("roi-status").textContent = "ROI area: " + out.area_px.toLocaleString() + " px" + (out.tiny ? " — very small: scores are unreliable" : "");
      $("roi-status").className = "roi-status " + (out.tiny ? "warn" : "ok");
      showError("");
    } catch (err) {
      if (seq !== areaSeq) return;
      $("roi-status").textContent = ""; showError(err.message);
      if (state.maskFile) { state.maskFile = null; $("score").disabled = true; }
    }
  }

  // ---------- clinical form ----------
  const fields = Array.from(document.querySelectorAll("#clinical .field"));
  function flagField(f) {
    const input = f.querySelector("input,select");
    const flag = f.querySelector(".flag");
    let text = "";
    if (input.value.trim() === "") text = "not given (imputed)";
    else if (input.dataset.min !== undefined) {
      const v = Number(input.value);
      if (Number.isNaN(v)) text = "not a number";
      else if (v < Number(input.dataset.min) || v > Number(input.dataset.max)) text = "outside the training range";
    }
    flag.textContent = text; flag.hidden = !text;
    f.classList.toggle("blank", input.value.trim() === "");
    return text;
  }
  for (const f of fields) {
    const input = f.querySelector("input,select");
    input.addEventListener("input", () => flagField(f));
    input.addEventListener("change", () => flagField(f));
    flagField(f);
  }
  function clinicalValues() {
    const out = {};
    for (const f of fields) {
      const input = f.querySelector("input,select");
      if (input.value.trim() !== "") out[input.name] = input.value.trim();
    }
    return out;
  }

  // ---------- scoring ----------
  function caseForm() {
    const form = new FormData();
    form.append("image", state.file);
    if (state.maskFile) form.append("mask", state.maskFile);
    else form.append("roi", JSON.stringify(state.points));
    for (const [k, v] of Object.entries(clinicalValues())) form.append(k, v);
    return form;
  }
  function payloadWarnings(payload) {
    const out = [];
    const add = (w) => {
      if (!w) return;
      const text = typeof w === "string" ? w : (w.message || JSON.stringify(w));
      if (!out.includes(text)) out.push(text);
    };
    // the payload of `radfusion predict --json`: {warnings, cases: [{case_id, warnings,
    // predictions: [...]}]}
    const records = [];
    (payload.warnings || []).forEach(add);
    for (const c of payload.cases || []) {
      (c.warnings || []).forEach(add);
      for (const p of c.predictions || []) records.push(Object.assign({ case_id: c.case_id }, p));
    }
    return { records: records, warnings: out, has: "warnings" in payload };
  }
  function localNotes() {
    const notes = [];
    for (const f of fields) {
      const t = flagField(f);
      if (t) notes.push(plain(f.dataset.name) + ": " + t);
    }
    if (state.tiny) notes.push("ROI of " + state.area + " px is below the study's minimum (" + info.min_roi_pixels + " px)");
    return notes;
  }
  function renderScores(records) {
    const order = info.models.map((m) => m.model);
    records.sort((a, b) => order.indexOf(a.model) - order.indexOf(b.model));
    const tbody = document.querySelector("#scores tbody");
    tbody.replaceChildren();
    let lastFamily = null;
    for (const r of records) {
      const m = modelInfo[r.model] || {};
      const call = r.predicted_class ? POS : NEG;
      const bar = el("span", { class: "bar" }, el("span", { class: "fill " + (r.predicted_class ? "pos" : "neg") }));
      bar.firstChild.style.width = (100 * r.probability).toFixed(1) + "%";
      const tick = el("span", { class: "tick" }); tick.style.left = (100 * r.threshold).toFixed(1) + "%"; bar.append(tick);
      const test = m.test && m.test.auc !== null && m.test.auc !== undefined
        ? fmt(m.test.auc, 3) + " (" + fmt(m.test.auc_low, 3) + "–" + fmt(m.test.auc_high, 3) + ")" : "—";
      const [ptext, ttext] = pair(r.probability, r.threshold);
      const flags = m.flags || [];
      const tr = el("tr", { class: (r.selected ? "chosen " : "") + (flags.length ? "flagged-row " : "") + (r.family !== lastFamily ? "family-start" : ""), "data-model": r.model, "data-probability": String(r.probability) },
        el("td", {}, el("span", { text: r.model }), r.selected ? el("span", { class: "star", title: "the study's chosen model of this family", text: " ★" }) : "",
          flags.length ? el("span", { class: "flagged", title: flags.join("; "), text: " ⚠ " + flags.join("; ") }) : ""),
        el("td", { text: m.family_label || r.family }),
        el("td", { class: "num prob" }, el("span", { class: "pval", text: ptext }), bar),
        el("td", { class: "num thr", text: ttext }),
        el("td", {}, el("span", { class: "call " + (r.predicted_class ? "pos" : "neg"), text: call })),
        el("td", { class: "num", text: test }));
      tbody.append(tr);
      lastFamily = r.family;
    }
  }
  function renderHeadline(records) {
    const box = $("headline");
    box.replaceChildren();
    const name = info.headline.model;
    const r = records.find((x) => x.model === name);
    if (!r) {
      box.append(el("p", { class: "verdict", text: "No single answer: " + info.headline.reason + "." }));
      return;
    }
    const m = modelInfo[name] || {};
    const call = r.predicted_class ? POS : NEG;
    const [ptext, ttext] = pair(r.probability, r.threshold);
    box.dataset.model = name;
    box.append(
      el("p", { class: "verdict" }, el("span", { class: "call big " + (r.predicted_class ? "pos" : "neg"), id: "headline-call", text: call }),
        el("span", { text: " by " + name + " (" + (m.family_label || r.family) + ")" })),
      el("p", { class: "numbers" },
        el("span", { text: "P(" + POS + ") " }), el("b", { id: "headline-p", text: ptext }),
        el("span", { text: r.predicted_class ? " ≥ threshold " : " < threshold " }), el("b", { id: "headline-t", text: ttext })));
    const t = m.test;
    const bits = [];
    if (t && t.auc !== null && t.auc !== undefined) {
      bits.push("Test AUC " + fmt(t.auc, 3) + " (95% CI " + fmt(t.auc_low, 3) + "–" + fmt(t.auc_high, 3) + ") on " + t.n + " test images (" + t.n_positive + " " + POS + ")");
    } else bits.push("No test AUC recorded for this model");
    bits.push("why this model: " + info.headline.reason);
    box.append(el("p", { class: "small", text: bits.join("; ") + "." }));
    const caveat = ["A decision aid, not a diagnosis. Read the call (probability against the threshold chosen on validation), not the probability alone"];
    box.append(el("p", { class: "muted small", text: caveat.join("; ") + "." }));
    box.append(el("p", { class: "muted small", id: "probability-scale", text: info.probabilities }));
    const others = records.filter((x) => x.selected && x.model !== name && !((modelInfo[x.model] || {}).flags || []).length);
    if (others.length) {
      const agree = others.filter((x) => x.predicted_class === r.predicted_class).length;
      box.append(el("p", { class: "muted small", id: "agreement", text: "The study's other chosen, unflagged models: " + agree + " of " + others.length + " give the same call." }));
    }
  }
  function plainNames(text) {
    // the server names clinical columns as in the manifest ('ipth'): add the plain name
    for (const f of info.clinical) text = text.split("'" + f.name + "'").join(f.label + " ('" + f.name + "')");
    return text;
  }
  function renderWarnings(list) {
    const box = $("warnings");
    box.replaceChildren();
    if (!list.length) { box.hidden = true; return; }
    box.append(el("b", { text: "Warnings" }), el("ul", {}, ...list.map((w) => el("li", { text: w }))));
    box.hidden = false;
  }
  function renderSnapshot() {
    const c = document.createElement("canvas");
    const s = Math.min(1, 900 / state.width);
    c.width = Math.round(state.width * s); c.height = Math.round(state.height * s);
    const g = c.getContext("2d");
    g.drawImage(state.img, 0, 0, c.width, c.height);
    if (state.maskImg) g.drawImage(state.maskImg, 0, 0, c.width, c.height);
    if (state.points.length) {
      g.beginPath(); g.moveTo(state.points[0][0] * s, state.points[0][1] * s);
      for (const p of state.points.slice(1)) g.lineTo(p[0] * s, p[1] * s);
      g.closePath(); g.lineWidth = 2; g.strokeStyle = "#22e06a"; g.stroke();
    }
    $("snapshot").src = c.toDataURL("image/png");
    const vals = Object.entries(clinicalValues()).map(([k, v]) => plain(k) + " " + withUnit(k, v)).join(", ");
    $("snapshot-caption").textContent = state.width + " × " + state.height + " px image; ROI " + (state.area ?? "?") + " px" + (vals ? "; clinical: " + vals : "; no clinical values given") + "; scored " + new Date().toLocaleString();
  }
  function renderGradcam(list) {
    const box = $("gradcam"); box.replaceChildren();
    if (!list.length) { box.append(el("span", { class: "muted", text: "This study has no deep models." })); return; }
    for (const g of list) box.append(el("figure", {}, el("img", { src: g.image, alt: "Grad-CAM heatmap of " + g.model + " over the image, ROI outlined in green" }), el("figcaption", { text: g.model })));
  }
  function renderContrib(rad) {
    const box = $("contrib"); box.replaceChildren();
    if (!rad || !rad.features.length) { box.append(el("span", { class: "muted", text: "No radiomics model with feature contributions." })); return; }
    const maxAbs = Math.max(...rad.features.map((f) => Math.abs(f.contribution)), 1e-9);
    box.append(el("div", { class: "muted small", text: rad.model + (rad.harmonized ? " (values after ComBat harmonisation)" : "") }));
    for (const f of rad.features) {
      const w = (50 * Math.abs(f.contribution) / maxAbs).toFixed(1) + "%";
      const bar = el("span", { class: "cbar " + (f.contribution >= 0 ? "pos" : "neg") });
      bar.style.width = w;
      if (f.contribution >= 0) bar.style.left = "50%"; else bar.style.right = "50%";
      box.append(el("div", { class: "crow", title: f.feature + ": value " + f.value.toPrecision(4) + " (training centre " + f.reference.toPrecision(4) + ")" },
        el("span", { class: "cname", text: f.label || f.feature }),
        el("span", { class: "ctrack" }, bar),
        el("span", { class: "cval num", text: (f.contribution >= 0 ? "+" : "") + f.contribution.toFixed(3) })));
    }
  }
  $("score").onclick = async () => {
    showError("");
    $("score").disabled = true;
    $("score-status").textContent = "scoring…";
    const t0 = performance.now();
    try {
      const payload = await post("/api/predict", caseForm());
      const { records, warnings, has } = payloadWarnings(payload);
      renderScores(records);
      renderHeadline(records);
      renderWarnings((has ? warnings : localNotes()).map(plainNames));
      renderSnapshot();
      $("gradcam").replaceChildren(el("span", { class: "muted", text: "computing…" }));
      $("contrib").replaceChildren(el("span", { class: "muted", text: "computing…" }));
      $("result").hidden = false;
      $("result").scrollIntoView({ behavior: "smooth", block: "start" });
      $("score-status").textContent = "scored in " + ((performance.now() - t0) / 1000).toFixed(1) + " s";
      document.body.dataset.scored = "1";
      post("/api/explain", caseForm()).then((ex) => { renderGradcam(ex.gradcam); renderContrib(ex.radiomics); })
        .catch((e) => { $("gradcam").textContent = e.message; $("contrib").textContent = ""; });
    } catch (e) {
      showError(e.message); $("score-status").textContent = "";
    } finally { $("score").disabled = !(state.closed || state.maskFile); }
  };
  $("print").onclick = () => window.print();
  window.addEventListener("resize", () => { if (state.img && state.zoom > 0) draw(); });
})();
