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

  // What ran, for anyone (or any test) checking the page came up whole.
  body.setAttribute("data-bars", String(document.querySelectorAll("svg.timeline rect.bar").length));
  body.setAttribute("data-report-ready", "true");
})();
