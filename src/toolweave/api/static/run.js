// Run page: follow the run's Server-Sent Events and redraw the live part of the page (progress,
// steps with their attempts, the graph) from /runs/<id>/live, the same template the server renders;
// reload once the run has ended so the outputs show. Outputs open in a larger view (the dialog).
(function () {
  "use strict";
  var root = document.getElementById('run');
  if (!root) return;
  var runId = root.dataset.run;
  var labels = {
    queued: 'Queued', pending: 'Waiting', running: 'Running', waiting_input: 'Needs you', completed: 'Completed',
    partially_completed: 'Partly completed', failed: 'Failed', cancelled: 'Cancelled'
  };

  // --- the larger view of outputs --------------------------------------------------------------
  var viewer = document.getElementById('viewer');
  var shown = 0;
  function zooms() { return Array.prototype.slice.call(document.querySelectorAll('#outputs a.zoom')); }
  function show(index) {
    var items = zooms();
    if (!items.length) return;
    shown = (index + items.length) % items.length;
    var link = items[shown];
    var body = viewer.querySelector('.viewer-body');
    body.innerHTML = '';
    var img = document.createElement('img');
    img.src = link.getAttribute('href');
    img.alt = link.dataset.name || '';
    body.appendChild(img);
    viewer.querySelector('.viewer-title').textContent = link.dataset.name || '';
    viewer.querySelector('.viewer-download').setAttribute('href', link.getAttribute('href') + '?download=true');
    viewer.querySelector('.viewer-nav').hidden = items.length < 2;
  }
  if (viewer && viewer.showModal) {
    document.addEventListener('click', function (e) {
      var link = e.target.closest && e.target.closest('#outputs a.zoom');
      if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      show(zooms().indexOf(link));
      viewer.showModal();
    });
    viewer.addEventListener('click', function (e) {
      if (e.target === viewer) viewer.close();  // a click on the backdrop
    });
    viewer.querySelector('form').addEventListener('submit', function (e) {
      var action = e.submitter && e.submitter.value;
      if (action === 'prev' || action === 'next') { e.preventDefault(); show(shown + (action === 'next' ? 1 : -1)); }
    });
    viewer.addEventListener('keydown', function (e) {
      if (e.key === 'ArrowRight') show(shown + 1);
      else if (e.key === 'ArrowLeft') show(shown - 1);
    });
  }

  if (root.dataset.terminal === 'true') return;

  // --- live updates ----------------------------------------------------------------------------
  var live = document.getElementById('run-live');
  var ended = false, inFlight = false, again = false, timer = null, last = 0;
  var MIN_GAP = 600;

  function setRun(status) {
    root.dataset.status = status;
    var pill = document.getElementById('run-status');
    pill.className = 'pill big st-' + status;
    pill.textContent = labels[status] || status;
  }

  ['input', 'change', 'focusin'].forEach(function (type) {
    live.addEventListener(type, function (event) {
      var form = event.target.closest && event.target.closest('form.answer');
      if (form && event.target.name !== 'csrf') form.classList.add('dirty');
    });
  });

  function redraw() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    last = Date.now();
    fetch('/runs/' + encodeURIComponent(runId) + '/live', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || ended) return;
        // someone is answering a question (typing, ticking): keep their form; their answer reloads the page
        if (live.querySelector('form.answer.dirty')) return;
        live.innerHTML = html;
        window.toolweave.refresh(live);
        var part = live.querySelector('.live');
        if (part) {
          setRun(part.dataset.status);
          if (part.dataset.terminal === 'true') finish();
        }
      })
      .catch(function (err) { console.error(err); })
      .then(function () {
        inFlight = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer || ended) return;
    var wait = Math.max(0, MIN_GAP - (Date.now() - last));
    timer = setTimeout(function () { timer = null; redraw(); }, wait);
  }

  function finish() {
    if (ended) return;
    ended = true;
    source.close();
    setTimeout(function () { window.location.reload(); }, 300);
  }

  var url = '/api/v1/runs/' + encodeURIComponent(runId) + '/events?after=' + encodeURIComponent(root.dataset.lastEvent || '0');
  var source = new EventSource(url);
  source.onmessage = schedule;
  ['run.started', 'step.started', 'step.submitted', 'step.progress', 'step.succeeded', 'step.skipped',
   'step.failed', 'step.retry_scheduled', 'step.cancelled'].forEach(function (type) {
    source.addEventListener(type, schedule);
  });
  source.addEventListener('run.cancel_requested', function () {
    var b = document.getElementById('cancel-run');
    if (b) { b.disabled = true; b.textContent = 'Cancelling…'; }
  });
  ['run.completed', 'run.partially_completed', 'run.failed', 'run.cancelled'].forEach(function (type) {
    source.addEventListener(type, function () { setRun(type.slice(4)); finish(); });
  });
  source.onerror = function () {
    if (ended) return;
    // The server closes the stream when the run ends; a 204 on reconnect stops the browser retrying.
    if (source.readyState === EventSource.CLOSED) setTimeout(function () { window.location.reload(); }, 1500);
  };
  // a retry's countdown ends without an event of its own: look again when it is due
  setInterval(function () {
    var due = Array.prototype.some.call(live.querySelectorAll('[data-until]'), function (el) {
      return Date.parse(el.dataset.until) <= Date.now();
    });
    if (due) schedule();
  }, 1000);
})();
