// Run form: show fields by their visibleIf, preview a chosen image before submitting, and guard
// against double submits.
(function () {
  "use strict";
  document.querySelectorAll('.media-input input[type=file]').forEach(function (input) {
    input.addEventListener('change', function () {
      var name = input.name;
      var preview = document.getElementById('preview-' + name);
      if (!preview) return;
      var file = input.files && input.files[0];
      if (file && file.type.indexOf('image/') === 0) {
        preview.src = URL.createObjectURL(file);
        preview.hidden = false;
      } else {
        preview.hidden = true;
      }
    });
  });
  // visibleIf: a field shows only while the field it names has one of its values (and is shown
  // itself). A hidden field's inputs are disabled, so they are neither required nor submitted; the
  // server ignores a hidden input's value anyway.
  function valueOf(name) {
    var box = document.querySelector('.field[data-field="' + name + '"]');
    if (!box || box.hidden) return null;
    var check = box.querySelector('input[type=checkbox][name="' + name + '"]');
    if (check) return check.checked ? 'true' : 'false';
    var input = box.querySelector('[name="' + name + '"]:not([type=hidden])');
    return input ? input.value : null;
  }
  function applyVisibility() {
    var changed = true;
    for (var round = 0; changed && round < 10; round++) {
      changed = false;
      document.querySelectorAll('.field[data-visible-field]').forEach(function (box) {
        var wanted = JSON.parse(box.getAttribute('data-visible-values') || '[]').map(function (v) {
          return String(v).toLowerCase();
        });
        var value = valueOf(box.getAttribute('data-visible-field'));
        var show = value !== null && wanted.indexOf(String(value).toLowerCase()) !== -1;
        if (box.hidden === !show) return;
        box.hidden = !show;
        box.querySelectorAll('input, select, textarea').forEach(function (el) { el.disabled = !show; });
        changed = true;
      });
    }
  }
  document.querySelectorAll('#run-form input, #run-form select, #run-form textarea').forEach(function (el) {
    el.addEventListener('change', applyVisibility);
    el.addEventListener('input', applyVisibility);
  });
  applyVisibility();
  // the estimate follows the form: the values typed so far go to POST /api/v1/estimates (the
  // session's CSRF token in its header), at most once per half second
  var box = document.getElementById('estimate');
  var timer = null;
  function text(tag, content, cls) {
    var el = document.createElement(tag);
    el.textContent = content;
    if (cls) el.className = cls;
    return el;
  }
  function refreshEstimate() {
    var formEl = document.getElementById('run-form');
    if (!box || !formEl) return;
    var inputs = {};
    formEl.querySelectorAll('input, select, textarea').forEach(function (el) {
      if (!el.name || el.disabled || el.type === 'file' || el.type === 'hidden' || el.name === 'costCeiling') return;
      if (el.name.indexOf('__') !== -1 || el.value === '') return;
      if (el.type === 'checkbox') { inputs[el.name] = el.checked; return; }
      inputs[el.name] = el.value;
    });
    var body = {inputs: inputs, version: box.getAttribute('data-version')};
    body[box.hasAttribute('data-job') ? 'jobId' : 'toolId'] = box.getAttribute('data-target');
    var csrf = formEl.querySelector('input[name=csrf]');
    fetch('/api/v1/estimates', {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf ? csrf.value : ''},
      body: JSON.stringify(body)
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (e) {
      if (!e) return;
      box.replaceChildren();
      var total = text('p', '', 'estimate-total');
      total.appendChild(text('strong', e.total));
      total.appendChild(document.createTextNode(' credits'));
      if (!e.known) total.appendChild(text('span', ' (part of it is only known after the run)', 'muted'));
      box.appendChild(total);
      var list = text('ul', '', 'plain');
      e.steps.forEach(function (s) {
        var li = text('li', '');
        li.appendChild(text('code', s.stepId));
        li.appendChild(document.createTextNode(' ' + s.cost + ' '));
        li.appendChild(text('span', s.basis, 'muted'));
        list.appendChild(li);
      });
      box.appendChild(list);
      if (e.available !== null) {
        box.appendChild(text('p', e.available + ' available' + (e.covered ? '' : ': not enough for this run'),
                             e.covered ? '' : 'alert error'));
      }
    }).catch(function () {});
  }
  document.querySelectorAll('#run-form input, #run-form select, #run-form textarea').forEach(function (el) {
    el.addEventListener('change', function () { clearTimeout(timer); timer = setTimeout(refreshEstimate, 500); });
  });
  var form = document.getElementById('run-form');
  if (form) {
    form.addEventListener('submit', function () {
      var button = document.getElementById('submit-run');
      if (button) { button.disabled = true; button.textContent = 'Starting…'; }
    });
  }
})();
