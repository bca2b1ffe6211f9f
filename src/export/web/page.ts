/**
 * The static files of `finetune export --format web`: index.html and app.js. They are strings here
 * (not files beside the code) so they reach dist/ with the compiled code and need no copy step.
 *
 * app.js is plain ES2017 for any current browser, no modules (a page opened from file:// may not
 * import modules) and no fetch (file:// forbids it): the model arrives as model.js, a script that
 * sets window.FINETUNE_MODEL (topology, weight specs, weights as base64, metadata), and images
 * arrive through a file input or drag and drop. Each image is drawn on a canvas at full size
 * (transparency onto white), resized in JavaScript the way finetune's decoder (sharp) resized the
 * training images (stretch, crop or pad; shrink-on-load, box and Lanczos-3 steps: within about
 * 0.3 levels of sharp's pixels on the hymenoptera photos, where the canvas's own scaling was 2–9
 * levels off and moved probabilities by up to 0.33), and fed to the model as raw RGB values 0–255,
 * which is what every exported model takes.
 */

/** The page. `{{TITLE}}` is replaced by the export. */
export const INDEX_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 860px; padding: 1.5rem; color: #1d1d1f; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  #about { color: #555; margin: 0 0 1rem; }
  #drop { border: 2px dashed #999; border-radius: 10px; padding: 1.5rem; text-align: center; }
  #drop.over { border-color: #0a6; background: #effaf4; }
  #status { margin: .75rem 0; color: #555; }
  #status.error { color: #b00; }
  #results { list-style: none; padding: 0; margin: 0; }
  .result { display: flex; gap: 1rem; align-items: flex-start; padding: .75rem 0; border-top: 1px solid #ddd; }
  .result canvas { width: 112px; height: 112px; image-rendering: auto; border: 1px solid #ccc; flex: none; }
  .result > div { flex: 1; min-width: 0; }
  .result .name { font-weight: 600; word-break: break-all; }
  .result .failed { color: #b00; }
  .row { display: grid; grid-template-columns: 10rem 1fr 4.5rem; gap: .5rem; align-items: center; }
  .bar { height: .7rem; background: #0a6; border-radius: 3px; }
  .row.top .label { font-weight: 600; }
  .p { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<p id="about"></p>
<div id="drop">
  <p><label for="files"><strong>Choose images</strong></label> or drop them here.</p>
  <input id="files" type="file" accept="image/*" multiple>
</div>
<p id="status" role="status">Loading the model…</p>
<ul id="results"></ul>
<noscript><p>This page needs JavaScript to run the model.</p></noscript>
<script src="tf.min.js"></script>
<script src="model.js"></script>
<script src="app.js"></script>
</body>
</html>
`;

export const APP_JS = String.raw`// Labels images with the model in model.js, in this browser, without any network access.
(function () {
  'use strict';
  var statusEl = document.getElementById('status');
  var resultsEl = document.getElementById('results');
  var M = window.FINETUNE_MODEL;
  // Every result, in the order shown, for scripts and tests: { file, label, probabilities } or { file, error }.
  window.finetuneResults = [];

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? 'error' : '';
  }
  if (typeof tf === 'undefined' || !M) {
    setStatus((typeof tf === 'undefined' ? 'tf.min.js' : 'model.js') + ' did not load: keep the files of this folder together.', true);
    return;
  }
  var meta = M.metadata;
  var size = meta.imageSize;
  document.getElementById('about').textContent =
    meta.classes.length + ' classes: ' + meta.classes.join(', ') + '. Images are resized to ' + size + '×' + size + ' (' + meta.resize + ').';

  function base64ToArrayBuffer(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  var modelReady = (async function () {
    await tf.ready();
    var model = await tf.loadLayersModel(
      tf.io.fromMemory({ modelTopology: M.modelTopology, weightSpecs: M.weightSpecs, weightData: base64ToArrayBuffer(M.weightData) })
    );
    // The first prediction compiles the backend's kernels; do it before the user waits on it.
    tf.tidy(function () { model.predict(tf.zeros([1, size, size, 3])); });
    setStatus('Ready (TensorFlow.js ' + tf.version.tfjs + ', ' + tf.getBackend() + ' backend). Choose or drop images.');
    document.body.dataset.ready = 'true';
    return model;
  })();
  modelReady.catch(function (error) {
    setStatus('The model did not load: ' + (error && error.message ? error.message : error), true);
  });

  // Resizing as finetune's decoder (sharp, libvips) does it, so the page sees the pixels training
  // saw (within a level or so, where the browser's own canvas scaling differs by several):
  //  1. JPEGs that are at least twice too large are decoded smaller by libjpeg (sharp's
  //     shrink-on-load): here a box average over k × k blocks, k = 2, 4 or 8;
  //  2. libvips then shrinks by whole factors with a box filter while 2× or more is left;
  //  3. and resamples the rest with a Lanczos-3 kernel (wide enough to average when shrinking);
  //  4. crop cuts the centre square out of the resized image, pad centres it on black.
  // Transparency is flattened onto white first, as training does.

  function jpegShrinkOnLoad(shrink) {
    var k = shrink >= 8 ? 8 : shrink >= 4 ? 4 : shrink >= 2 ? 2 : 1;
    // sharp steps down where libjpeg's scaling would round badly.
    if (k > 1 && Math.floor(shrink) === k) k /= 2;
    return k;
  }

  async function isJpeg(file) {
    var head = new Uint8Array(await file.slice(0, 3).arrayBuffer());
    return head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
  }

  // Mean of kx × ky blocks; a partial block at the right or bottom edge is dropped, as libjpeg's
  // scaled decoding in libvips does (keeping it shifts every row of the result by up to half a
  // pixel). src has channels values per pixel.
  function boxShrink(src, w, h, channels, kx, ky) {
    var ow = Math.max(1, Math.floor(w / kx));
    var oh = Math.max(1, Math.floor(h / ky));
    var out = new Float32Array(ow * oh * 3);
    var n = Math.min(kx, w) * Math.min(ky, h);
    for (var y = 0; y < oh; y++) {
      for (var x = 0; x < ow; x++) {
        var r = 0, g = 0, b = 0;
        for (var sy = y * ky; sy < Math.min(h, (y + 1) * ky); sy++) {
          for (var sx = x * kx; sx < Math.min(w, (x + 1) * kx); sx++) {
            var i = (sy * w + sx) * channels;
            r += src[i]; g += src[i + 1]; b += src[i + 2];
          }
        }
        var o = (y * ow + x) * 3;
        out[o] = r / n; out[o + 1] = g / n; out[o + 2] = b / n;
      }
    }
    return { data: out, width: ow, height: oh };
  }

  function lanczos3(x) {
    if (x === 0) return 1;
    if (x <= -3 || x >= 3) return 0;
    var px = Math.PI * x;
    return (3 * Math.sin(px) * Math.sin(px / 3)) / (px * px);
  }

  // Resamples along x from img.width to outWidth, and writes the result transposed (so calling it
  // twice resizes both axes and restores the orientation).
  function resampleRowsTransposed(img, outWidth) {
    var w = img.width, h = img.height, src = img.data;
    var scale = w / outWidth;
    var stretch = Math.max(scale, 1);
    var support = 3 * stretch;
    var out = new Float32Array(outWidth * h * 3);
    for (var x = 0; x < outWidth; x++) {
      var centre = (x + 0.5) * scale;
      var lo = Math.max(0, Math.floor(centre - support));
      var hi = Math.min(w, Math.ceil(centre + support));
      var weights = new Float32Array(hi - lo);
      var total = 0;
      for (var i = lo; i < hi; i++) total += weights[i - lo] = lanczos3((i + 0.5 - centre) / stretch);
      for (var y = 0; y < h; y++) {
        var r = 0, g = 0, b = 0;
        for (var j = lo; j < hi; j++) {
          var wt = weights[j - lo], s = (y * w + j) * 3;
          r += wt * src[s]; g += wt * src[s + 1]; b += wt * src[s + 2];
        }
        var o = (x * h + y) * 3;
        out[o] = r / total; out[o + 1] = g / total; out[o + 2] = b / total;
      }
    }
    return { data: out, width: h, height: outWidth };
  }

  // The model's input for one image: size × size RGB values 0–255 (HWC), as finetune's decoder makes them.
  async function modelInput(file, bitmap) {
    var w = bitmap.width, h = bitmap.height;
    var hshrink = w / size, vshrink = h / size;
    if (meta.resize === 'crop') hshrink = vshrink = Math.min(hshrink, vshrink);
    if (meta.resize === 'pad') hshrink = vshrink = Math.max(hshrink, vshrink);
    var full = document.createElement('canvas');
    full.width = w;
    full.height = h;
    var ctx = full.getContext('2d', { willReadFrequently: true });
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0);
    var rgba = ctx.getImageData(0, 0, w, h).data;
    var k = (await isJpeg(file)) ? jpegShrinkOnLoad(Math.min(hshrink, vshrink)) : 1;
    var img = boxShrink(rgba, w, h, 4, k, k);
    // The size the resize aims at, from the (possibly smaller) decoded image.
    var outW = Math.max(1, Math.round(img.width / (hshrink / k)));
    var outH = Math.max(1, Math.round(img.height / (vshrink / k)));
    if (meta.resize === 'stretch') { outW = size; outH = size; }
    var boxW = Math.max(1, Math.floor(img.width / outW / 2));
    var boxH = Math.max(1, Math.floor(img.height / outH / 2));
    if (boxW > 1 || boxH > 1) img = boxShrink(img.data, img.width, img.height, 3, boxW, boxH);
    img = resampleRowsTransposed(resampleRowsTransposed(img, outW), outH);
    var input = new Float32Array(size * size * 3); // black where pad leaves room
    var left = meta.resize === 'pad' ? Math.floor((size - outW) / 2) : -Math.floor((outW - size + 1) / 2);
    var top = meta.resize === 'pad' ? Math.floor((size - outH) / 2) : -Math.floor((outH - size + 1) / 2);
    for (var y = 0; y < outH; y++) {
      var ty = y + top;
      if (ty < 0 || ty >= size) continue;
      for (var x = 0; x < outW; x++) {
        var tx = x + left;
        if (tx < 0 || tx >= size) continue;
        for (var c = 0; c < 3; c++) {
          input[(ty * size + tx) * 3 + c] = Math.min(255, Math.max(0, Math.round(img.data[(y * outW + x) * 3 + c])));
        }
      }
    }
    return input;
  }

  // Shows what the model sees, at the model's size.
  function drawInput(canvas, input) {
    canvas.width = size;
    canvas.height = size;
    var ctx = canvas.getContext('2d');
    var pixels = ctx.createImageData(size, size);
    for (var i = 0, j = 0; j < input.length; i += 4, j += 3) {
      pixels.data[i] = input[j];
      pixels.data[i + 1] = input[j + 1];
      pixels.data[i + 2] = input[j + 2];
      pixels.data[i + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
  }

  async function decode(file) {
    try {
      return await createImageBitmap(file, { imageOrientation: 'from-image' });
    } catch (error) {
      throw new Error('cannot decode this file as an image');
    }
  }

  async function predict(model, input) {
    var probs = tf.tidy(function () { return model.predict(tf.tensor4d(input, [1, size, size, 3])); });
    try {
      return Array.from(await probs.data());
    } finally {
      probs.dispose();
    }
  }

  function resultItem(file, canvas) {
    var li = document.createElement('li');
    li.className = 'result';
    li.dataset.file = file.name;
    li.appendChild(canvas);
    var body = document.createElement('div');
    var name = document.createElement('div');
    name.className = 'name';
    name.textContent = file.name;
    body.appendChild(name);
    li.appendChild(body);
    return { li: li, body: body };
  }

  function showProbabilities(item, probabilities) {
    var order = probabilities.map(function (p, i) { return i; }).sort(function (a, b) { return probabilities[b] - probabilities[a]; });
    var shown = order.slice(0, Math.min(meta.top, order.length));
    shown.forEach(function (k, rank) {
      var row = document.createElement('div');
      row.className = 'row' + (rank === 0 ? ' top' : '');
      var label = document.createElement('span');
      label.className = 'label';
      label.textContent = meta.classes[k];
      var track = document.createElement('span');
      var bar = document.createElement('div');
      bar.className = 'bar';
      bar.style.width = (100 * probabilities[k]).toFixed(1) + '%';
      track.appendChild(bar);
      var p = document.createElement('span');
      p.className = 'p';
      p.textContent = (100 * probabilities[k]).toFixed(1) + ' %';
      row.appendChild(label);
      row.appendChild(track);
      row.appendChild(p);
      item.body.appendChild(row);
    });
    item.li.dataset.label = meta.classes[order[0]];
    item.li.dataset.probabilities = JSON.stringify(probabilities);
  }

  async function classify(files) {
    var model;
    try {
      model = await modelReady;
    } catch (error) {
      return;
    }
    var list = Array.prototype.filter.call(files, function (f) { return f && f.size !== undefined; });
    for (var n = 0; n < list.length; n++) {
      var file = list[n];
      setStatus('Labelling ' + (n + 1) + ' of ' + list.length + ': ' + file.name + '…');
      var canvas = document.createElement('canvas');
      var item = resultItem(file, canvas);
      resultsEl.insertBefore(item.li, resultsEl.firstChild);
      try {
        var bitmap = await decode(file);
        var input = await modelInput(file, bitmap);
        bitmap.close();
        drawInput(canvas, input);
        var probabilities = await predict(model, input);
        showProbabilities(item, probabilities);
        window.finetuneResults.push({ file: file.name, label: item.li.dataset.label, probabilities: probabilities });
      } catch (error) {
        var failed = document.createElement('div');
        failed.className = 'failed';
        failed.textContent = error && error.message ? error.message : String(error);
        item.body.appendChild(failed);
        item.li.dataset.error = failed.textContent;
        window.finetuneResults.push({ file: file.name, error: failed.textContent });
      }
    }
    setStatus('Labelled ' + list.length + ' image' + (list.length === 1 ? '' : 's') + '. Choose or drop more.');
    document.body.dataset.done = String(window.finetuneResults.length);
  }

  // For scripts and tests: what the model is given for a file (size × size × 3 values 0–255).
  window.finetuneModelInput = async function (file) {
    var bitmap = await decode(file);
    try {
      return await modelInput(file, bitmap);
    } finally {
      bitmap.close();
    }
  };

  document.getElementById('files').addEventListener('change', function (event) {
    classify(event.target.files);
  });
  var drop = document.getElementById('drop');
  ['dragenter', 'dragover'].forEach(function (type) {
    document.addEventListener(type, function (event) {
      event.preventDefault();
      drop.classList.add('over');
    });
  });
  ['dragleave', 'drop'].forEach(function (type) {
    document.addEventListener(type, function () { drop.classList.remove('over'); });
  });
  document.addEventListener('drop', function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length > 0) classify(event.dataTransfer.files);
  });
})();
`;
