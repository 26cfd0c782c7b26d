// The upload page, enhanced: drop a photo on the drop zone (or paste one), a preview before
// uploading, a camera and a gallery button on phones, and one submit at a time.
// Without JavaScript the same form is a plain file input and works as is.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = form.querySelector("input[type=file][name=image]");
  var zone = document.getElementById("dropzone");
  var preview = document.getElementById("preview");
  var previewImg = document.getElementById("preview-img");
  var previewName = document.getElementById("preview-name");
  var fileError = document.getElementById("file-error");
  var submit = document.getElementById("submit");
  var gallery = document.getElementById("gallery-input");
  var maxBytes = parseInt(form.dataset.maxBytes, 10) || 0;
  // the server's list (ScanUploadForm.content_types): JPEG, PNG, WebP, GIF, AVIF, HEIC/HEIF
  var ACCEPTED = (form.dataset.types || "").split(" ");
  var objectUrl = null;

  zone.classList.add("enhanced");
  // phones: one button for the camera (the input's capture attribute), one for the gallery
  if (window.matchMedia && window.matchMedia("(pointer: coarse)").matches) {
    form.classList.add("touch");
  }

  function humanSize(bytes) {
    if (bytes < 1024 * 1024) return Math.max(1, Math.round(bytes / 1024)) + " KB";
    return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  }

  function problem(file) {
    // the server checks the content; this only saves a pointless upload
    if (file.type && ACCEPTED.indexOf(file.type) === -1) return form.dataset.msgType;
    if (maxBytes && file.size > maxBytes) return form.dataset.msgSize;
    return "";
  }

  function showFile() {
    var file = input.files && input.files[0];
    if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
    if (!file) {
      preview.hidden = true;
      zone.classList.remove("has-file");
      return;
    }
    var error = problem(file);
    fileError.textContent = error;
    fileError.hidden = !error;
    zone.classList.toggle("invalid", !!error);
    submit.disabled = !!error;
    objectUrl = URL.createObjectURL(file);
    previewImg.hidden = false;
    previewImg.src = objectUrl;
    previewName.textContent = file.name + " · " + humanSize(file.size);
    preview.hidden = false;
    zone.classList.add("has-file");
  }

  function useFiles(files) {
    if (!files || !files.length) return;
    try {
      var transfer = new DataTransfer();
      transfer.items.add(files[0]);
      input.files = transfer.files;
    } catch (e) {
      return; // very old browsers: the file input itself still works
    }
    showFile();
  }

  input.addEventListener("change", showFile);
  // a browser that cannot show the photo (HEIC outside Safari) shows its name instead
  previewImg.addEventListener("error", function () { previewImg.hidden = true; });

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (e) {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  });
  ["dragleave", "dragend", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    useFiles(e.dataTransfer && e.dataTransfer.files);
  });
  // a photo dropped next to the zone should not navigate away from the page
  window.addEventListener("dragover", function (e) { e.preventDefault(); });
  window.addEventListener("drop", function (e) { e.preventDefault(); });

  document.addEventListener("paste", function (e) {
    var items = (e.clipboardData && e.clipboardData.files) || [];
    if (items.length && /^image\//.test(items[0].type)) useFiles(items);
  });

  var camera = document.getElementById("pick-camera");
  if (camera) camera.addEventListener("click", function () { input.click(); });
  var pick = document.getElementById("pick-gallery");
  if (pick && gallery) {
    pick.addEventListener("click", function () { gallery.click(); });
    gallery.addEventListener("change", function () { useFiles(gallery.files); });
  }

  form.addEventListener("submit", function (e) {
    if (submit.disabled) { e.preventDefault(); return; }
    // one upload per press: a second tap while the photo uploads would scan it twice
    setTimeout(function () {
      submit.disabled = true;
      submit.textContent = form.dataset.msgSending;
      form.classList.add("sending");
    }, 0);
  });
})();
