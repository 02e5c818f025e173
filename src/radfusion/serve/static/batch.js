/* radfusion serve: the batch page. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  $("batch-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = $("archive").files[0];
    $("error").hidden = true;
    if (!f) { $("error").textContent = "Choose a .zip first."; $("error").hidden = false; return; }
    const form = new FormData(); form.append("archive", f);
    $("batch-status").textContent = "scoring…";
    try {
      const res = await fetch("/api/batch", { method: "POST", body: form, credentials: "same-origin" });
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        throw new Error(body.error || ("server answered " + res.status));
      }
      const text = await res.text();
      $("download").href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      const rows = text.trim().split(/\r?\n/).map((l) => l.split(","));
      const head = document.querySelector("#batch-table thead"), body = document.querySelector("#batch-table tbody");
      head.replaceChildren(); body.replaceChildren();
      const tr = document.createElement("tr");
      for (const h of rows[0]) { const th = document.createElement("th"); th.textContent = h; tr.append(th); }
      head.append(tr);
      for (const r of rows.slice(1, 201)) {
        const row = document.createElement("tr");
        for (const c of r) { const td = document.createElement("td"); td.textContent = c; row.append(td); }
        body.append(row);
      }
      const cases = new Set(rows.slice(1).map((r) => r[0])).size;
      $("batch-summary").textContent = cases + " case(s), " + (rows.length - 1) + " score(s)" + (rows.length > 201 ? " (first 200 shown)" : "");
      $("batch-result").hidden = false;
      $("batch-status").textContent = "";
    } catch (err) {
      $("error").textContent = err.message; $("error").hidden = false; $("batch-status").textContent = "";
    }
  });
})();
