// The trade ticket: shows the leverage slider's value and bounds it by the chosen instrument.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var form = document.getElementById("ticket");
  if (!form) return;
  var slider = form.querySelector("input[name=leverage]");
  var output = document.getElementById("leverage-value");
  var capLabel = document.getElementById("leverage-cap");
  var instrument = form.querySelector("select[name=instrument]");
  var caps = {};
  try { caps = JSON.parse(form.dataset.leverageCaps || "{}"); } catch (e) { caps = {}; }

  function show() { if (slider && output) output.textContent = slider.value; }
  function bound() {
    if (!slider || !instrument) return;
    var cap = caps[instrument.value];
    if (!cap) return;
    slider.max = String(cap);
    if (Number(slider.value) > cap) slider.value = String(cap);
    if (capLabel) capLabel.textContent = String(cap);
    show();
  }
  if (slider) slider.addEventListener("input", show);
  if (instrument) instrument.addEventListener("change", bound);
  bound();
  show();
});
