// The live parts of a page are swapped in again every few seconds; without this, each swap puts
// a wide table back at its left edge, so where the table is wider than its box (the positions
// table with large numbers; narrower screens get cards instead) the right-hand columns
// (liquidation price, distance) could not be scrolled to and read. Every scrollable box with an id keeps its
// horizontal position across a swap.
(function () {
  "use strict";
  var kept = {};

  document.addEventListener("htmx:beforeSwap", function () {
    kept = {};
    document.querySelectorAll(".table-wrap[id]").forEach(function (box) {
      if (box.scrollLeft) kept[box.id] = box.scrollLeft;
    });
  });
  document.addEventListener("htmx:afterSwap", function () {
    Object.keys(kept).forEach(function (id) {
      var box = document.getElementById(id);
      if (box) box.scrollLeft = kept[id];
    });
  });
})();
