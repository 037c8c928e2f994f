// The live parts of a page are swapped in again every few seconds, and htmx gives the focus back
// only to an element with an id. Without this, a keyboard user who had tabbed to a position's
// link or a resting order's Change or Cancel lost the focus to the top of the page at the next
// refresh, two seconds later, and could not reach those controls to use them. The matching
// element of the new part (same kind, same link or form, the same one in order) gets it back.
(function () {
  "use strict";
  var FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]";
  var kept = null;

  // Not the text: a ticker link's text is a price that changes with every refresh.
  function signature(element) {
    var form = element.closest("form");
    return [
      element.tagName,
      element.getAttribute("href") || "",
      form ? form.getAttribute("action") || "" : "",
      element.getAttribute("name") || "",
      element.getAttribute("type") || "",
    ].join(" ");
  }

  function matching(root, wanted) {
    return Array.prototype.filter.call(root.querySelectorAll(FOCUSABLE), function (element) {
      return signature(element) === wanted;
    });
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    kept = null;
    var part = event.detail.target;
    var active = document.activeElement;
    if (!part || !part.id || !active || active === part || !part.contains(active) || active.id) return;
    var wanted = signature(active);
    kept = { part: part.id, signature: wanted, index: matching(part, wanted).indexOf(active) };
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!kept) return;
    var part = document.getElementById(kept.part);
    var element = part ? matching(part, kept.signature)[kept.index] : null;
    kept = null;
    if (element && !element.contains(document.activeElement)) element.focus({ preventScroll: true });
  });
})();
