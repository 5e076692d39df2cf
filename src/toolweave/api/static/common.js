// Every page: times in the viewer's own time zone, and live "for 12 s" / "in 4 s" counters.
// The server sends UTC inside <time datetime="…">; data-since / data-until hold ISO instants.
(function () {
  "use strict";
  var dateTime = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
  var timeOnly = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  var full = { dateStyle: 'full', timeStyle: 'long' };

  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      var at = new Date(el.getAttribute('datetime'));
      if (isNaN(at)) return;
      var style = el.dataset.style === 'time' ? timeOnly : dateTime;
      el.textContent = at.toLocaleString(undefined, style);
      el.title = at.toLocaleString(undefined, full);
      el.dataset.local = 'true';
    });
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll('[data-since]').forEach(function (el) {
      var at = Date.parse(el.dataset.since);
      if (!isNaN(at)) el.textContent = (el.dataset.prefix || 'for ') + span(now - at);
    });
    document.querySelectorAll('[data-until]').forEach(function (el) {
      var at = Date.parse(el.dataset.until);
      if (isNaN(at)) return;
      el.textContent = at - now > 500 ? 'in ' + span(at - now) : 'now';
    });
  }

  window.toolweave = {
    refresh: function (root) { localTimes(root || document); tick(); },
    span: span
  };
  window.toolweave.refresh(document);
  setInterval(tick, 1000);
})();
