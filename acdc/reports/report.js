// The edge table of `circuit report` pages (inlined into each page): sorting, filtering,
// showing; marks the page ready (or its errors) on <body> so that a test can tell it ran.
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (event) {
    errors.push(String(event.message));
    document.body.setAttribute("data-errors", String(errors.length));
    var box = document.getElementById("js-errors");
    if (box) { box.textContent = "Script error: " + errors.join("; "); }
  });
  var LIMIT = 1000;
  var data = JSON.parse(document.getElementById("edge-data").textContent);
  var columns = data.columns;
  var rows = data.rows.map(function (row) {
    return row.map(function (v) { return v === "inf" ? Infinity : v; });
  });
  var table = document.getElementById("edge-table");
  var filter = document.getElementById("edge-filter");
  var keptOnly = document.getElementById("kept-only");
  var count = document.getElementById("edge-count");
  var showAll = document.getElementById("show-all");
  var KEPT = columns.indexOf("kept"), NAME = columns.indexOf("edge");
  var sortColumn = columns.indexOf("|score|"), direction = -1, all = false;

  function shown(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    if (v === Infinity) { return "\u221e"; }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    if (typeof v === "number" && !Number.isInteger(v)) { return v.toPrecision(4); }
    return String(v);
  }
  function compare(a, b) {
    var x = a[sortColumn], y = b[sortColumn];
    if (x === y) { return a[0] - b[0]; }
    if (x === null) { return 1; }
    if (y === null) { return -1; }
    return (x < y ? -1 : 1) * direction;
  }
  function head() {
    var tr = document.createElement("tr");
    columns.forEach(function (name, i) {
      var th = document.createElement("th");
      th.textContent = name;
      th.setAttribute("scope", "col");
      if (i === sortColumn) {
        th.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
      }
      th.addEventListener("click", function () {
        direction = i === sortColumn ? -direction : (i === NAME ? 1 : -1);
        sortColumn = i;
        draw();
      });
      tr.appendChild(th);
    });
    table.tHead.replaceChildren(tr);
  }
  function draw() {
    var text = filter.value.trim();
    var picked = rows.filter(function (row) {
      return (!keptOnly.checked || row[KEPT]) && (!text || row[NAME].indexOf(text) >= 0);
    }).sort(compare);
    var fragment = document.createDocumentFragment();
    picked.slice(0, all ? picked.length : LIMIT).forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (value) {
        var td = document.createElement("td");
        td.textContent = shown(value);
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    table.tBodies[0].replaceChildren(fragment);
    var visible = Math.min(picked.length, all ? picked.length : LIMIT);
    count.textContent = (visible < picked.length ? "showing " + visible + " of " : "") +
      picked.length + " of " + rows.length + " edges";
    showAll.hidden = visible >= picked.length;
    head();
  }
  filter.addEventListener("input", draw);
  keptOnly.addEventListener("change", draw);
  showAll.addEventListener("click", function () { all = true; draw(); });
  draw();
  document.body.setAttribute("data-report-ready", "1");
})();
