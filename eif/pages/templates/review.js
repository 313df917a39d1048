// The review page's script (vanilla JavaScript, no library): renders one page of suggestion cards at a
// time from the JSON in #review-data (eif.report.review.page_data), filtered and sorted as the controls
// say, keeps the person's decisions in localStorage and exports them as CSV.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const classes = data.classes;
  const rows = data.rows;
  const known = new Set(rows.map((r) => r.id));
  const storeKey = "eif-review:" + data.key;
  const view = {
    page: 0, size: 50, current: "", suggested: "", method: "", status: "all", share: "", agree: "0",
    sort: "review",
  };
  const $ = (id) => document.getElementById(id);

  // id -> {decision: "accept" | "reject" | "change", label: new training label id}
  const decisions = (function restore() {
    try {
      const saved = JSON.parse(localStorage.getItem(storeKey) || "[]");
      return new Map(saved.filter((entry) => known.has(entry[0])));
    } catch (err) {
      return new Map();
    }
  })();

  function persist() {
    try {
      localStorage.setItem(storeKey, JSON.stringify(Array.from(decisions)));
    } catch (err) {
      // No storage (private mode, quota): decisions last until the tab is closed.
    }
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function option(value, text) {
    const o = el("option", "", text);
    o.value = String(value);
    return o;
  }

  // A thumbnail, or where the data has no images (feature vectors) a box with the sample's path or id.
  function thumb(src, alt, title, px) {
    if (src === null) {
      const box = el("span", "noimg", title);
      box.title = title;
      box.style.width = box.style.height = px + "px";
      return box;
    }
    const img = el("img");
    img.src = src;
    img.alt = alt;
    img.title = title;
    img.width = px;
    img.height = px;
    return img;
  }

  const pct = (v) => Math.round(v * 100) + "%";
  // The class options of a card's "other label" dropdown are added when it is first opened: with
  // thousands of classes (InShop), building them for every card of a page would take seconds.
  function labelChoice(row, d) {
    const select = el("select", "choose");
    select.append(option("", "other label…"));
    if (d && d.decision === "change") select.append(option(d.label, classes[d.label]));
    select.value = d && d.decision === "change" ? String(d.label) : "";
    const fill = () => {
      if (select.options.length > 2) return;
      const chosen = select.value;
      select.replaceChildren(option("", "other label…"), ...classes.map((name, c) => option(c, name)));
      select.value = chosen;
    };
    select.addEventListener("mousedown", fill);
    select.addEventListener("focus", fill);
    select.addEventListener("keydown", fill);
    select.addEventListener("change", () => choose(row, select.value));
    return select;
  }

  // A decision for row: accept (the suggestion), reject (keep the old label), change (another label).
  function decide(row, decision, label) {
    const now = decisions.get(row.id);
    if (decision === null || (now && now.decision === decision && now.label === label)) {
      decisions.delete(row.id);
    } else {
      decisions.set(row.id, { decision: decision, label: label });
    }
    persist();
    if (view.status === "all") {
      const old = document.querySelector('.card[data-id="' + row.id + '"]');
      if (old) old.replaceWith(card(row));
      counts();
    } else {
      render();
    }
  }

  function choose(row, value) {
    if (value === "") return decide(row, null, null);
    const label = Number(value);
    const decision = label === row.suggested ? "accept" : label === row.label ? "reject" : "change";
    decide(row, decision, label);
  }

  function examples(c, role) {
    const box = el("div", "examples");
    box.append(el("span", "", classes[c] + " (" + role + "):"));
    for (const ex of data.examples[c] || []) {
      box.append(thumb(ex.img, classes[c], "train #" + ex.id, 28));
    }
    return box;
  }

  function card(row) {
    const d = decisions.get(row.id);
    const node = el("div", "card" + (d ? " " + d.decision : ""));
    node.dataset.id = row.id;
    const pic = el("div", "thumb");
    pic.append(thumb(row.img, classes[row.label], row.path, data.px));
    node.dataset.p = String(row.p);
    const info = el("div", "info");
    info.append(el("div", "ref", "train #" + row.id + " · " + row.path));
    const labels = el("div", "labels");
    const suggested = el("b", "suggested", classes[row.suggested]);
    labels.append(el("b", "current", classes[row.label]), " → ", suggested);
    labels.append(" (p = " + row.p.toFixed(2) + ")");
    info.append(labels);
    const votes = row.votes.map((v) => classes[v[0]] + " " + pct(v[1])).join(" · ");
    info.append(el("div", "votes", "votes of k = " + data.k + ": " + votes));
    const flags = Object.keys(row.flags).map((m) => {
      const f = row.flags[m];
      return m.toUpperCase() + " " + (f[0] >= 0 ? "+" : "") + f[0].toPrecision(3) + " (rank " + f[1] + ")";
    });
    info.append(el("div", "flags", "flagged by " + flags.join(" · ") + agreement(row)));
    const actions = el("div", "actions");
    const accept = el("button", "accept", "Accept");
    const reject = el("button", "reject", "Reject");
    accept.type = reject.type = "button";
    accept.setAttribute("aria-pressed", String(!!d && d.decision === "accept"));
    reject.setAttribute("aria-pressed", String(!!d && d.decision === "reject"));
    accept.addEventListener("click", () => decide(row, "accept", row.suggested));
    reject.addEventListener("click", () => decide(row, "reject", row.label));
    actions.append(accept, reject, labelChoice(row, d));
    info.append(actions);
    if (d) info.append(el("div", "decision", d.decision + ": new label " + classes[d.label]));
    info.append(examples(row.label, "current"), examples(row.suggested, "suggested"));
    node.append(pic, info);
    return node;
  }

  const agreeing = (row) => Object.keys(row.flags).length;
  const agreement = (row) =>
    data.methods.length > 1 ? " (" + agreeing(row) + " of " + data.methods.length + " methods)" : "";

  function matches(row) {
    if (view.current !== "" && row.label !== Number(view.current)) return false;
    if (view.suggested !== "" && row.suggested !== Number(view.suggested)) return false;
    if (view.method !== "" && !(view.method in row.flags)) return false;
    if (agreeing(row) < Number(view.agree)) return false;
    // vote share: "0.8" keeps p >= 0.8, "-0.5" keeps p < 0.5
    if (view.share !== "" && Number(view.share) >= 0 && row.p < Number(view.share)) return false;
    if (view.share !== "" && Number(view.share) < 0 && row.p >= -Number(view.share)) return false;
    if (view.status === "open" && decisions.has(row.id)) return false;
    if (view.status === "done" && !decisions.has(row.id)) return false;
    return true;
  }

  function shown() {
    // rows come in review order; sort is stable, so ties keep it
    const out = rows.filter(matches);
    if (view.sort === "share-desc") out.sort((a, b) => b.p - a.p);
    else if (view.sort === "share-asc") out.sort((a, b) => a.p - b.p);
    else if (view.sort === "agree") out.sort((a, b) => agreeing(b) - agreeing(a));
    else if (view.method !== "") out.sort((a, b) => a.flags[view.method][1] - b.flags[view.method][1]);
    return out;
  }

  function pageRows() {
    const all = shown();
    const pages = Math.max(1, Math.ceil(all.length / view.size));
    view.page = Math.min(view.page, pages - 1);
    return { all: all, pages: pages, rows: all.slice(view.page * view.size, (view.page + 1) * view.size) };
  }

  function counts() {
    const n = { accept: 0, reject: 0, change: 0 };
    decisions.forEach((d) => (n[d.decision] += 1));
    const done = decisions.size;
    $("counts").textContent =
      rows.length + " suggestions: " + n.accept + " accepted, " + n.reject + " rejected, " +
      n.change + " changed, " + (rows.length - done) + " not reviewed";
    $("export").textContent = "Export " + done + " decision" + (done === 1 ? "" : "s") + " (CSV)";
  }

  function render() {
    const p = pageRows();
    $("cards").replaceChildren(...p.rows.map(card));
    const where = "page " + (view.page + 1) + " of " + p.pages;
    $("page-info").textContent = where + " (" + p.all.length + " shown)";
    $("prev").disabled = view.page === 0;
    $("next").disabled = view.page >= p.pages - 1;
    counts();
  }

  // A text cell that a spreadsheet would run as a formula (it begins with = + - @, a tab or a carriage
  // return, and is not a number) gets a leading ' (OWASP's CSV-injection rule), as eif.utils.csvsafe does.
  function csvField(value) {
    let s = String(value);
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(s) && !(s.trim() !== "" && isFinite(Number(s)))) {
      s = "'" + s;
    }
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    const lines = [data.columns.join(",")];
    for (const row of rows) {
      const d = decisions.get(row.id);
      if (!d) continue;
      const fields = [
        row.id, row.path, classes[row.label], classes[d.label], row.label, d.label, d.decision,
        JSON.stringify(data.store_keys), JSON.stringify(data.overrides),
      ];
      lines.push(fields.map(csvField).join(","));
    }
    const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    const a = el("a");
    a.href = url;
    a.download = "corrected_labels.csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function bulk(decision) {
    for (const row of pageRows().rows) {
      if (!decisions.has(row.id)) {
        const label = decision === "accept" ? row.suggested : row.label;
        decisions.set(row.id, { decision: decision, label: label });
      }
    }
    persist();
    render();
  }

  function filter(id, key) {
    $(id).addEventListener("change", (e) => {
      view[key] = key === "size" ? Number(e.target.value) : e.target.value;
      view.page = 0;
      render();
    });
  }

  for (let n = 2; n <= data.methods.length; n += 1) {
    $("f-agree").append(option(n, "flagged by at least " + n + " of " + data.methods.length + " methods"));
  }
  for (const id of ["f-current", "f-suggested"]) classes.forEach((name, c) => $(id).append(option(c, name)));
  data.methods.forEach((m) => $("f-method").append(option(m, m.toUpperCase())));
  filter("f-current", "current");
  filter("f-suggested", "suggested");
  filter("f-method", "method");
  filter("f-status", "status");
  filter("f-size", "size");
  filter("f-share", "share");
  filter("f-agree", "agree");
  filter("f-sort", "sort");
  $("prev").addEventListener("click", () => { view.page -= 1; render(); });
  $("next").addEventListener("click", () => { view.page += 1; render(); });
  $("accept-page").addEventListener("click", () => bulk("accept"));
  $("reject-page").addEventListener("click", () => bulk("reject"));
  $("export").addEventListener("click", exportCsv);
  $("clear").addEventListener("click", () => {
    if (!window.confirm("Clear all " + decisions.size + " decisions?")) return;
    decisions.clear();
    persist();
    render();
  });
  render();
})();
