// Shows every <time data-local> in the reader's own time zone (the server writes UTC), also in
// the parts of a page that htmx swaps in.
(function () {
  "use strict";
  var FORMATS = {
    seconds: { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" },
    minutes: { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" },
    day: { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" },
    time: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
  };

  function localise(root) {
    (root || document).querySelectorAll("time[data-local]").forEach(function (element) {
      var when = new Date(element.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      var format = FORMATS[element.dataset.local] || FORMATS.minutes;
      element.title = when.toISOString().replace("T", " ").slice(0, 19) + " UTC";
      element.textContent = when.toLocaleString([], format);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localise(event.target); });
})();
