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
  // "use it" in the preview puts the largest quantity the balance opens into the ticket.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-fill-quantity]") : null;
    if (!button) return;
    var quantity = form.querySelector("input[name=quantity]");
    var notional = form.querySelector("input[name=notional]");
    if (!quantity) return;
    quantity.value = button.getAttribute("data-fill-quantity");
    if (notional) notional.value = "";
    quantity.dispatchEvent(new Event("input", { bubbles: true }));
    quantity.focus();
  });
  // The preview sends each field's error out of band; mark the field itself red with it, as
  // a submitted ticket does, so "the fields marked in red" can be found.
  function markErrors() {
    form.querySelectorAll(".field-error").forEach(function (span) {
      var field = span.closest(".field, fieldset");
      var refused = span.textContent.trim() !== "";
      if (field) field.classList.toggle("has-error", refused);
      // A screen reader announces the refusal with the field, as on a submitted ticket.
      var input = field && field.querySelector("input:not([type=radio]), select");
      if (!input || !span.id) return;
      var ids = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (id) {
        return id && id !== span.id;
      });
      if (refused) ids.push(span.id);
      if (ids.length) input.setAttribute("aria-describedby", ids.join(" "));
      else input.removeAttribute("aria-describedby");
      if (refused) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    });
  }
  document.body.addEventListener("htmx:afterSettle", markErrors);
  // Only the price the order type uses is shown and sent: a limit price left on a market
  // order would otherwise look as if it applied.
  var type = form.querySelector("select[name=type]");
  function showPrices() {
    [["price", "limit"], ["stop_price", "stop"]].forEach(function (pair) {
      var input = form.querySelector("input[name=" + pair[0] + "]");
      if (!input) return;
      var used = !type || type.value === pair[1];
      input.disabled = !used;
      var field = input.closest(".field");
      if (field) field.hidden = !used;
    });
  }
  // One submit at a time: a second click while the first is on its way would only be found
  // out by the server (the ticket's one-time id), so the button waits instead. Back on the
  // page from the history, or if no answer comes, it works again.
  var sending = false;
  function ready() {
    sending = false;
    document.querySelectorAll("button[form=ticket], #ticket button[type=submit]").forEach(
      function (button) { button.disabled = false; button.removeAttribute("aria-busy"); }
    );
  }
  form.addEventListener("submit", function (event) {
    if (sending) { event.preventDefault(); return; }
    sending = true;
    var button = event.submitter;
    // After this event, so the submission goes out as the click made it.
    if (button) {
      setTimeout(function () {
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
      }, 0);
    }
    setTimeout(ready, 15000);
  });
  window.addEventListener("pageshow", function (event) { if (event.persisted) ready(); });
  if (type) type.addEventListener("change", showPrices);
  showPrices();
  if (slider) slider.addEventListener("input", show);
  if (instrument) instrument.addEventListener("change", bound);
  bound();
  show();
});
