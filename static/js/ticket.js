// Shows the leverage slider's value next to its label.
document.addEventListener("DOMContentLoaded", function () {
  var slider = document.querySelector("#ticket input[name=leverage]");
  var output = document.getElementById("leverage-value");
  if (!slider || !output) return;
  var show = function () { output.textContent = slider.value; };
  slider.addEventListener("input", show);
  show();
});
