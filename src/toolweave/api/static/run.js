// Run page: follow the run's Server-Sent Events and update the DAG, the step table and the
// progress bar live; reload once the run has ended so the server renders its outputs.
(function () {
  "use strict";
  var root = document.getElementById('run');
  if (!root || root.dataset.terminal === 'true') return;
  var runId = root.dataset.run;
  var total = parseInt(root.dataset.steps || '1', 10) || 1;
  var labels = {
    pending: 'Queued', ready: 'Ready', running: 'Running', waiting_retry: 'Retrying', succeeded: 'Done',
    failed: 'Failed', skipped: 'Skipped', cancelled: 'Cancelled', completed: 'Completed',
    partially_completed: 'Partly completed'
  };
  var states = {};
  var progress = {};
  document.querySelectorAll('.dag .node').forEach(function (node) {
    var m = /st-(\w+)/.exec(node.getAttribute('class') || '');
    states[node.dataset.step] = m ? m[1] : 'pending';
  });

  function fmtDuration(ms) {
    if (ms == null) return '—';
    if (ms < 1000) return ms + ' ms';
    var s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
  }

  function setStep(stepId, status, extra) {
    extra = extra || {};
    states[stepId] = status;
    var node = document.querySelector('.dag .node[data-step="' + CSS.escape(stepId) + '"]');
    if (node) {
      node.setAttribute('class', 'node st-' + status);
      var text = labels[status] || status;
      if (extra.durationMs != null) text += ' · ' + fmtDuration(extra.durationMs);
      else if (status === 'running' && progress[stepId] != null) text += ' · ' + Math.round(progress[stepId] * 100) + '%';
      node.querySelector('.state').textContent = text;
      var bar = node.querySelector('.bar');
      var w = parseFloat(node.querySelector('rect').getAttribute('width'));
      var frac = status === 'succeeded' ? 1 : (status === 'running' ? (progress[stepId] || 0.04) : 0);
      bar.setAttribute('width', (w * frac).toFixed(1));
    }
    var row = document.querySelector('[data-step-row="' + CSS.escape(stepId) + '"]');
    if (row) {
      var pill = row.querySelector('[data-role=status]');
      pill.className = 'pill st-' + status;
      pill.textContent = labels[status] || status;
      if (extra.attempt != null) row.querySelector('[data-role=attempt]').textContent = extra.attempt;
      if (extra.startedAt) row.querySelector('[data-role=started]').textContent = extra.startedAt;
      if (extra.durationMs != null) row.querySelector('[data-role=duration]').textContent = fmtDuration(extra.durationMs);
      if (extra.note) row.querySelector('[data-role=note]').textContent = extra.note;
    }
    updateProgress();
  }

  function updateProgress() {
    var done = 0, partial = 0;
    Object.keys(states).forEach(function (k) {
      var s = states[k];
      if (s === 'succeeded' || s === 'failed' || s === 'skipped' || s === 'cancelled') done += 1;
      else if (s === 'running') partial += (progress[k] || 0);
    });
    var pct = Math.min(100, Math.round(100 * (done + partial) / total));
    document.getElementById('run-progress').style.width = pct + '%';
    var counter = document.getElementById('steps-done');
    if (counter) counter.textContent = done;
  }

  function setRun(status) {
    root.dataset.status = status;
    var pill = document.getElementById('run-status');
    pill.className = 'pill big st-' + status;
    pill.textContent = labels[status] || status;
    document.getElementById('run-progress').className = 'fill st-' + status;
  }

  function message(data) {
    var e = data && data.error;
    if (!e) return null;
    return typeof e === 'string' ? e : (e.message || JSON.stringify(e));
  }

  var url = '/api/v1/runs/' + encodeURIComponent(runId) + '/events?after=' + encodeURIComponent(root.dataset.lastEvent || '0');
  var source = new EventSource(url);
  var ended = false;
  var handlers = {
    'run.started': function () { setRun('running'); },
    'step.started': function (e) { setStep(e.stepId, 'running', { attempt: e.data.attempt, startedAt: new Date(e.at * 1000).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' }); },
    'step.submitted': function (e) { setStep(e.stepId, 'running'); },
    'step.progress': function (e) { progress[e.stepId] = e.data.progress; setStep(e.stepId, 'running'); },
    'step.succeeded': function (e) { setStep(e.stepId, 'succeeded', { durationMs: e.data.durationMs }); },
    'step.skipped': function (e) { setStep(e.stepId, 'skipped', { note: e.data.reason }); },
    'step.failed': function (e) { setStep(e.stepId, 'failed', { note: message(e.data) }); },
    'step.retry_scheduled': function (e) { setStep(e.stepId, 'waiting_retry', { note: message(e.data) }); },
    'step.cancelled': function (e) { setStep(e.stepId, 'cancelled'); },
    'run.cancel_requested': function () { var b = document.getElementById('cancel-run'); if (b) { b.disabled = true; b.textContent = 'Cancelling…'; } },
  };
  ['run.completed', 'run.partially_completed', 'run.failed', 'run.cancelled'].forEach(function (type) {
    handlers[type] = function () {
      ended = true;
      setRun(type.slice(4));
      source.close();
      setTimeout(function () { window.location.reload(); }, 400);
    };
  });
  Object.keys(handlers).forEach(function (type) {
    source.addEventListener(type, function (msg) {
      try { handlers[type](JSON.parse(msg.data)); } catch (err) { console.error(err); }
    });
  });
  source.onerror = function () {
    if (ended) return;
    // The server closes the stream when the run ends; a 204 on reconnect stops the browser retrying.
    if (source.readyState === EventSource.CLOSED) setTimeout(function () { window.location.reload(); }, 1500);
  };
})();
