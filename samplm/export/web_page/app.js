// A samplm adapter in the browser: the image encoder runs once per image, every click runs the exported
// decoder graph (SAM's prompt encoder + the adapter's PLM + SAM's mask decoder) with onnxruntime-web.
//
// models/models.json (written by samplm.export.write_web_bundle / `samplm export --web`):
//   {"img_size": 256, "pixel_mean": [...], "pixel_std": [...], "encoder": "encoder.onnx",
//    "adapters": [{"name": "sam", "task": null, "decoder": "sam.onnx"},
//                 {"name": "plate", "task": "plate", "decoder": "adapter-1.onnx"}, ...]}
// "name" is only shown in the list (as text); decoders are kept by their position in "adapters".
// Query string: ?image=URL loads an image at start.

"use strict";

// Threads need a cross-origin isolated page (`samplm serve-web` sends the headers); else one thread.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", location.href).href;

const state = { manifest: null, encoder: null, decoders: [], image: null, embedding: null, input: null };
const $ = (id) => document.getElementById(id);

function setStatus(text) {
  $("status").textContent = text;
}

async function loadModels() {
  state.manifest = await (await fetch("models/models.json")).json();
  state.encoder = await ort.InferenceSession.create("models/" + state.manifest.encoder);
  for (const [index, adapter] of state.manifest.adapters.entries()) {
    state.decoders.push(await ort.InferenceSession.create("models/" + adapter.decoder));
    const option = document.createElement("option");
    option.value = String(index);
    option.textContent = adapter.name;
    $("adapter").appendChild(option);
  }
}

// ResizeLongestSide: the longest side becomes img_size, the other is scaled and rounded.
function inputSize(height, width, longest) {
  const scale = longest / Math.max(height, width);
  return [Math.floor(height * scale + 0.5), Math.floor(width * scale + 0.5)];
}

// 1 x 3 x S x S float tensor: resized, normalised with SAM's pixel mean and std, padded bottom/right.
function preprocess(image) {
  const size = state.manifest.img_size;
  const [h, w] = inputSize(image.naturalHeight, image.naturalWidth, size);
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(image, 0, 0, w, h);
  const pixels = context.getImageData(0, 0, w, h).data;
  const data = new Float32Array(3 * size * size);
  const { pixel_mean: mean, pixel_std: std } = state.manifest;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        data[c * size * size + y * size + x] = (pixels[4 * (y * w + x) + c] - mean[c]) / std[c];
      }
    }
  }
  state.input = [h, w];
  return new ort.Tensor("float32", data, [1, 3, size, size]);
}

async function setImage(url) {
  setStatus("encoding");
  const image = new Image();
  image.src = url;
  await image.decode();
  state.image = image;
  for (const id of ["photo", "overlay"]) {
    $(id).width = image.naturalWidth;
    $(id).height = image.naturalHeight;
  }
  $("photo").getContext("2d").drawImage(image, 0, 0);
  const output = await state.encoder.run({ image: preprocess(image) });
  state.embedding = output.image_embeddings;
  setStatus("ready");
}

// One click (x, y in image pixels) -> the selected adapter's best mask of three.
async function segment(x, y) {
  const { naturalHeight: height, naturalWidth: width } = state.image;
  const [h, w] = state.input;
  const grid = state.embedding.dims[2];
  const feeds = {
    image_embeddings: state.embedding,
    point_coords: new ort.Tensor("float32", new Float32Array([x * (w / width), y * (h / height), 0, 0]), [1, 2, 2]),
    point_labels: new ort.Tensor("float32", new Float32Array([1, -1]), [1, 2]),
    mask_input: new ort.Tensor("float32", new Float32Array(16 * grid * grid), [1, 1, 4 * grid, 4 * grid]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([0]), [1]),
    orig_im_size: new ort.Tensor("float32", new Float32Array([height, width]), [2]),
  };
  const index = Number($("adapter").value);
  const name = state.manifest.adapters[index].name;
  const output = await state.decoders[index].run(feeds);
  const scores = output.iou_predictions.data;
  const count = output.masks.dims[1];
  let best = count === 1 ? 0 : 1;
  for (let i = 2; i < count; i++) if (scores[i] > scores[best]) best = i;
  const plane = width * height;
  const logits = output.masks.data.subarray(best * plane, (best + 1) * plane);
  const mask = new Uint8Array(plane);
  let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let i = 0; i < plane; i++) {
    if (logits[i] > 0) {
      mask[i] = 1;
      area++;
      const px = i % width, py = Math.floor(i / width);
      x0 = Math.min(x0, px); y0 = Math.min(y0, py); x1 = Math.max(x1, px); y1 = Math.max(y1, py);
    }
  }
  draw(mask, width, height);
  const result = { adapter: name, click: [x, y], area, bbox: [x0, y0, x1, y1], score: scores[best] };
  const runtime = { isolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads };
  window.samplmResult = { ...result, ...runtime, width, height, mask: Array.from(mask) };
  $("result").textContent = JSON.stringify(result);
}

function draw(mask, width, height) {
  const context = $("overlay").getContext("2d");
  const overlay = context.createImageData(width, height);
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) overlay.data.set([255, 64, 64, 120], 4 * i);
  }
  context.putImageData(overlay, 0, 0);
}

$("overlay").addEventListener("click", (event) => {
  const box = $("overlay").getBoundingClientRect();
  const x = (event.clientX - box.left) * ($("overlay").width / box.width);
  const y = (event.clientY - box.top) * ($("overlay").height / box.height);
  segment(x, y).catch((error) => setStatus("error: " + error));
});
$("file").addEventListener("change", (event) => setImage(URL.createObjectURL(event.target.files[0])));

loadModels()
  .then(() => {
    const url = new URLSearchParams(location.search).get("image");
    return url ? setImage(url) : setStatus("ready: choose an image");
  })
  .catch((error) => setStatus("error: " + error));
