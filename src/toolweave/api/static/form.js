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
  var form = document.getElementById('run-form');
  if (form) {
    form.addEventListener('submit', function () {
      var button = document.getElementById('submit-run');
      if (button) { button.disabled = true; button.textContent = 'Starting…'; }
    });
  }
})();
