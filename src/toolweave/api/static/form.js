// Run form: preview a chosen image before submitting, and guard against double submits.
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
  var form = document.getElementById('run-form');
  if (form) {
    form.addEventListener('submit', function () {
      var button = document.getElementById('submit-run');
      if (button) { button.disabled = true; button.textContent = 'Starting…'; }
    });
  }
})();
