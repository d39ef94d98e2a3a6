/* unlearn-kb site behaviour: math, sortable tables and the method explorer.
   Vanilla JS, no network. Runs on every page view, including Material's instant navigation. */
(function () {
  "use strict";

  /* Math: only the elements that arithmatex's generic mode produces (or the generator writes)
     are rendered, so a "$" in record text never becomes math. trust:false keeps \href and
     friends off. */
  function renderMath(root) {
    if (!window.katex) return;
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.ukbMath) return;
      var tex = el.textContent.trim();
      var wrapped = tex.match(/^\\\[([\s\S]*)\\\]$/) || tex.match(/^\\\(([\s\S]*)\\\)$/);
      if (wrapped) tex = wrapped[1];
      window.katex.render(tex, el, {
        displayMode: el.tagName === "DIV", throwOnError: false, trust: false, output: "htmlAndMathml"
      });
      el.dataset.ukbMath = "1";
    });
  }

  function sortTables(root) {
    if (!window.Tablesort) return;
    root.querySelectorAll("article table:not([class]), table.ukb-sortable").forEach(function (table) {
      if (table.dataset.ukbSort || !table.tHead) return;
      new window.Tablesort(table);
      table.dataset.ukbSort = "1";
    });
  }

  /* The explorer: each <select data-filter=X> keeps the rows whose data-X holds its value (a
     space-separated list); the text input keeps rows whose data-text holds every word. Filters
     can be preset from the query string, e.g. ?stated=removal&level=parameter. */
  function initExplorer(root) {
    if (root.dataset.ukbReady) return;
    root.dataset.ukbReady = "1";
    var form = root.querySelector("form");
    var rows = Array.prototype.slice.call(root.querySelectorAll("tbody tr"));
    var count = root.querySelector(".ukb-count");
    var controls = Array.prototype.slice.call(form.querySelectorAll("[data-filter]"));
    var params = new URLSearchParams(window.location.search);
    controls.forEach(function (control) {
      var preset = params.get(control.dataset.filter);
      if (preset !== null) control.value = preset;
    });

    function apply() {
      var shown = 0;
      rows.forEach(function (row) {
        var keep = controls.every(function (control) {
          var wanted = control.value.trim().toLowerCase();
          if (!wanted) return true;
          var have = row.dataset[control.dataset.filter] || "";
          if (control.tagName === "SELECT") return have.split(" ").indexOf(wanted) >= 0;
          return wanted.split(/\s+/).every(function (word) { return have.indexOf(word) >= 0; });
        });
        row.hidden = !keep;
        if (keep) shown += 1;
      });
      count.textContent = shown === rows.length
        ? "Showing all " + rows.length + " methods"
        : "Showing " + shown + " of " + rows.length + " methods";
    }

    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("reset", function () { window.setTimeout(apply, 0); });
    apply();
  }

  function onEveryPage(root) {
    renderMath(root);
    sortTables(root);
    root.querySelectorAll("[data-ukb-explorer]").forEach(initExplorer);
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(function () { onEveryPage(document); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { onEveryPage(document); });
  } else {
    onEveryPage(document);
  }
})();
