// squid-mesh console: confirmations and auto-refresh. Pages work without it (no confirmation).
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
  var seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) {
    return;
  }
  var box = document.getElementById("auto-refresh");
  var key = "squid-mesh-refresh";
  if (box) {
    box.checked = window.localStorage.getItem(key) !== "off";
    box.addEventListener("change", function () {
      window.localStorage.setItem(key, box.checked ? "on" : "off");
    });
  }
  window.setTimeout(function tick() {
    // No reload while the operator types in a field or reads an opened payload.
    var active = document.activeElement;
    var typing = active && (/TEXTAREA|SELECT/.test(active.tagName) ||
      (active.tagName === "INPUT" && !/checkbox|radio|submit|button/.test(active.type)));
    var reading = document.querySelector("details[open]") !== null;
    var enabled = box ? box.checked : window.localStorage.getItem(key) !== "off";
    if (enabled && !typing && !reading) {
      window.location.reload();
    } else {
      window.setTimeout(tick, seconds * 1000);
    }
  }, seconds * 1000);
})();
