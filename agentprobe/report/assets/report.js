// Inlined into every report. The page reads fine without it; this only adds the toggles.
// It never reads recorded text as HTML: it only flips classes and styles.
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (event) {
    body.setAttribute("data-js-error", String(event.message || "error"));
  });

  // Context charts: full scale (against the window) or zoomed to the conversations' own range.
  Array.prototype.forEach.call(document.querySelectorAll(".model-block"), function (block) {
    var button = block.querySelector("button.zoom");
    var full = block.querySelector(".scale-full");
    var zoom = block.querySelector(".scale-zoom");
    if (!button || !full || !zoom) return;
    button.addEventListener("click", function () {
      var zoomed = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", String(zoomed));
      button.textContent = zoomed ? "show the whole window" : "zoom to the data";
      full.style.display = zoomed ? "none" : "";
      zoom.style.display = zoomed ? "" : "none";
    });
  });

  // Calls tables: one checkbox anywhere filters them all, so the two runs stay comparable.
  var boxes = document.querySelectorAll("input.only-errors");
  Array.prototype.forEach.call(boxes, function (box) {
    box.addEventListener("change", function () {
      Array.prototype.forEach.call(boxes, function (other) { other.checked = box.checked; });
      body.classList.toggle("only-bad", box.checked);
    });
  });

  // A call's row expands to its request and answer; a link to a call (a finding's) opens it.
  function expand(button, open) {
    var row = document.getElementById(button.getAttribute("aria-controls"));
    if (!row) return;
    button.setAttribute("aria-expanded", String(open));
    button.textContent = open ? "▾" : "▸";
    row.hidden = !open;
  }
  Array.prototype.forEach.call(document.querySelectorAll("button.expand"), function (button) {
    button.addEventListener("click", function () {
      expand(button, button.getAttribute("aria-expanded") !== "true");
    });
  });
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var row = id && document.getElementById(id);
    var button = row && row.querySelector("button.expand");
    if (button) expand(button, true);
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();

  // What ran, for anyone (or any test) checking the page came up whole.
  body.setAttribute("data-bars", String(document.querySelectorAll("svg.timeline rect.bar").length));
  body.setAttribute("data-scroll-width", String(document.documentElement.scrollWidth));
  // The sections of blocks whose content is wider than the window gives them (they scroll sideways).
  body.setAttribute("data-overflowing", Array.prototype.filter.call(
    document.querySelectorAll(".wide"), function (el) { return el.scrollWidth > el.clientWidth + 1; }
  ).map(function (el) {
    var section = el.closest("section");
    return (section && section.id) || "?";
  }).join(" "));
  body.setAttribute("data-report-ready", "true");
})();
