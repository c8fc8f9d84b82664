/* The seed's browser proof of concept: draw a digit, classify it with published theta CSVs.
 *
 * Mirrors, in plain JavaScript with no dependencies:
 *   digits/theta.py   the theta CSV contract and Model.probabilities (float32 weights);
 *   digits/network.py N-layer versions (conv, maxpool, dense, listed by the manifest's `layers`);
 *   digits/images.py  normalise(): polarity from the border median, background subtraction,
 *                     the strong-ink box grown by 2 px, Pillow's Lanczos resize of the longer
 *                     side to 20 px, centre of mass to (14, 14) in a 28 x 28 field.
 *
 * For tests and the console: window.modelReady (a promise of the current model's info),
 * window.classifyPixels(784 numbers in [0, 1], ink bright) -> Promise of 10 probabilities,
 * window.normaliseCanvas() -> 784 numbers (or null for a blank pad), window.canvasGrey(),
 * window.setCanvasGrey(values, width, height), window.modelInfo().
 */
(() => {
  'use strict';

  const N_INPUT = 784;
  const N_CLASSES = 10;
  const FIELD = 28;
  const BOX = 20;
  const MIN_CONTRAST = 0.2;
  const FLOAT32_MAX = 3.4028234663852886e38;
  const DEFAULT_MODEL = {
    theta1: '../../digits/default_model/theta1.csv.gz',
    theta2: '../../digits/default_model/theta2.csv.gz',
    manifest: '../../digits/default_model/manifest.json',
  };
  const f32 = Math.fround;

  // ---------------------------------------------------------------- theta files

  class ThetaError extends Error {}

  /** The CSV bytes, gunzipped if they are gzip (sniffed, so a server's Content-Encoding is fine). */
  async function plainBytes(bytes, name) {
    if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
    if (typeof DecompressionStream === 'undefined') {
      throw new ThetaError(`${name}: this browser cannot gunzip (no DecompressionStream); use the plain .csv`);
    }
    try {
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    } catch (error) {
      throw new ThetaError(`${name}: not a readable gzip file (${error.message})`);
    }
  }

  const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:inf|infinity|nan)$/i;

  /** Parse one theta CSV into {rows, cols, data: Float64Array}, refusing what Python refuses. */
  function parseTheta(bytes, name) {
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 127) throw new ThetaError(`${name}: not a readable CSV text file (byte ${i} is not ASCII)`);
    }
    const text = new TextDecoder('ascii').decode(bytes);
    const lines = text.split(/\r\n|\n|\r/);
    const rows = [];
    for (let number = 1; number <= lines.length; number++) {
      if (lines[number - 1].trim() !== '') rows.push(number);
    }
    if (rows.length === 0) throw new ThetaError(`${name}: file is empty`);
    const cols = lines[rows[0] - 1].split(',').length;
    const data = new Float64Array(rows.length * cols);
    rows.forEach((number, r) => {
      const cells = lines[number - 1].split(',');
      if (cells.length !== cols) {
        throw new ThetaError(`${name}: row ${number} has ${cells.length} columns, expected ${cols} like row 1`);
      }
      for (let c = 0; c < cols; c++) {
        const cell = cells[c].trim();
        if (!NUMBER.test(cell)) {
          throw new ThetaError(`${name}: row ${number}, column ${c + 1}: '${cell.slice(0, 40)}' is not a number`);
        }
        const value = /^[+-]?inf/i.test(cell) ? (cell[0] === '-' ? -Infinity : Infinity) : Number(cell);
        if (!(Math.abs(value) <= FLOAT32_MAX)) {
          throw new ThetaError(`${name}: row ${r + 1}, column ${c + 1}: ${cell} is not a finite float32 number`);
        }
        data[r * cols + c] = value;
      }
    });
    return { rows: rows.length, cols, data };
  }

  /** Check the pair against the contract and keep float32 copies, as digits.theta.Model does. */
  function buildModel(t1, t2, name1, name2) {
    if (t1.rows !== N_INPUT + 1) {
      throw new ThetaError(`${name1}: expected shape (${N_INPUT + 1}, H), found (${t1.rows}, ${t1.cols})`);
    }
    const hidden = t1.cols;
    if (t2.rows !== hidden + 1 || t2.cols !== N_CLASSES) {
      throw new ThetaError(`${name2}: expected shape (${hidden + 1}, ${N_CLASSES}) to match H=${hidden} ` +
                           `from ${name1}, found (${t2.rows}, ${t2.cols})`);
    }
    return {
      hidden,
      b1: Float32Array.from(t1.data.subarray(0, hidden)),
      w1: Float32Array.from(t1.data.subarray(hidden)),        // 784 x H, row-major
      b2: Float32Array.from(t2.data.subarray(0, N_CLASSES)),
      w2: Float32Array.from(t2.data.subarray(N_CLASSES)),     // H x 10, row-major
    };
  }

  const LAYER_OPS = ['conv', 'maxpool', 'dense'];
  const ACTIVATIONS = ['relu', 'sigmoid', 'linear', 'softmax'];

  /** Chain an N-layer model's layers from 28 x 28 x 1 pixels to the 10 classes, as
   *  digits/network.py does, keeping float32 weights; refuse naming the file and the layer. */
  function buildNetwork(layers, parsed, where) {
    let [height, width, channels] = [FIELD, FIELD, 1];
    const steps = [];
    layers.forEach((layer, index) => {
      const number = index + 1;
      const label = layer.file ? `${where}/${layer.file}, layer ${number} (${layer.op})` : `${where}: layer ${number} (${layer.op})`;
      if (!LAYER_OPS.includes(layer.op)) {
        throw new ThetaError(`${where}/manifest.json: layers[${number}]: unknown operation '${layer.op}' (known: ${LAYER_OPS.join(', ')})`);
      }
      if (index > 0 && layers[index - 1].op === 'dense' && layer.op !== 'dense') {
        throw new ThetaError(`${label}: needs an image, and layer ${number - 1} is dense`);
      }
      const input = { height, width, channels };
      if (layer.op === 'maxpool') {
        if (!(layer.size >= 2 && layer.size <= Math.min(height, width))) throw new ThetaError(`${label}: size ${layer.size} does not fit`);
        [height, width] = [Math.floor(height / layer.size), Math.floor(width / layer.size)];
        steps.push({ op: 'maxpool', size: layer.size, input, output: { height, width, channels } });
        return;
      }
      if (!ACTIVATIONS.includes(layer.activation)) {
        throw new ThetaError(`${where}/manifest.json: layers[${number}]: activation '${layer.activation}' is not one of ${ACTIVATIONS.join(', ')}`);
      }
      const matrix = parsed[layer.file];
      let inputs; let need; let pad = [0, 0];
      if (layer.op === 'conv') {
        const { kernel, stride } = layer;
        inputs = kernel * kernel * channels;
        need = `a ${kernel}x${kernel} convolution of ${channels} channel(s) needs`;
        const side = (n) => (layer.padding === 'same' ? Math.ceil(n / stride) : Math.floor((n - kernel) / stride) + 1);
        const before = (n) => Math.floor(Math.max((Math.ceil(n / stride) - 1) * stride + kernel - n, 0) / 2);
        if (layer.padding === 'same') pad = [before(height), before(width)];
        [height, width] = [side(height), side(width)];
      } else {
        inputs = height * width * channels;
        need = `a dense layer on ${inputs} inputs needs`;
        [height, width] = [1, 1];
      }
      if (matrix.rows !== inputs + 1) {
        throw new ThetaError(`${label}: ${matrix.rows} rows, but ${need} ${inputs} weight rows under the bias row (${inputs + 1})`);
      }
      channels = matrix.cols;
      steps.push({
        ...layer, input, pad, output: { height, width, channels },
        bias: Float32Array.from(matrix.data.subarray(0, channels)),
        weights: Float32Array.from(matrix.data.subarray(channels)),  // inputs x channels, row-major
      });
    });
    if (height !== 1 || width !== 1 || channels !== N_CLASSES) {
      throw new ThetaError(`${where}/${layers[layers.length - 1].file}, layer ${layers.length}: ${channels} outputs, ` +
                           `the model must end in ${N_CLASSES} classes`);
    }
    const last = layers[layers.length - 1];
    if (last.op !== 'dense' || last.activation !== 'softmax') {
      throw new ThetaError(`${where}/manifest.json: layers[${layers.length}] is not a dense softmax over the classes`);
    }
    const architecture = steps.map((s) => (s.op === 'maxpool' ? `pool${s.size}`
      : s.op === 'conv' ? `conv${s.kernel}x${s.output.channels}` : `dense${s.output.channels}`)).join('-');
    return { steps, architecture };
  }

  /** The manifest's test accuracy, as a note for the model panel (none if it has none). */
  function accuracyNote(manifest) {
    const accuracy = manifest.metrics && manifest.metrics.test_accuracy;
    return typeof accuracy === 'number' ? [`test accuracy ${(100 * accuracy).toFixed(2)}%`] : [];
  }

  async function sha256Hex(bytes) {
    if (!(globalThis.crypto && crypto.subtle)) return null;  // only in secure contexts (https, localhost)
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** Load a model from raw bytes: {theta1, theta2} as Uint8Array, an optional parsed manifest. */
  async function loadModel(raw1, raw2, manifest, names, source) {
    const [plain1, plain2] = await Promise.all([plainBytes(raw1, names[0]), plainBytes(raw2, names[1])]);
    const model = buildModel(parseTheta(plain1, names[0]), parseTheta(plain2, names[1]), names[0], names[1]);
    const info = { version: null, hidden: model.hidden, architecture: `dense${model.hidden}-dense${N_CLASSES}`,
                   source, check: 'no manifest', manifest };
    if (manifest) {
      info.version = typeof manifest.version === 'string' ? manifest.version : null;
      const notes = [];
      if (manifest.hidden !== undefined && manifest.hidden !== model.hidden) {
        notes.push(`manifest says hidden=${manifest.hidden}, the files have ${model.hidden}`);
      }
      const files = manifest.files || {};
      const wanted = [files['theta1.csv'] && files['theta1.csv'].sha256, files['theta2.csv'] && files['theta2.csv'].sha256];
      if (wanted[0] && wanted[1]) {
        const found = await Promise.all([sha256Hex(plain1), sha256Hex(plain2)]);
        if (found[0] === null) {
          notes.push('sha256 not checked (needs a secure context: https or localhost)');
        } else if (found[0] !== wanted[0] || found[1] !== wanted[1]) {
          notes.push("sha256 MISMATCH: these files are not the manifest's");
        } else {
          notes.push("sha256 of both files match the manifest");
        }
      }
      notes.push(...accuracyNote(manifest));
      info.check = notes.join('; ') || 'manifest has no sha256s';
    }
    if (!info.version) info.version = `(no manifest: ${names[0]}, ${names[1]})`;
    return { model, info };
  }

  /** Load an N-layer model: the files its manifest's `layers` name, by name, as Uint8Array. */
  async function loadLayers(rawByName, manifest, source) {
    const where = typeof manifest.version === 'string' ? manifest.version : 'model';
    if (!Array.isArray(manifest.layers) || manifest.layers.length === 0) {
      throw new ThetaError(`${where}/manifest.json: layers is not a list of layers`);
    }
    const names = manifest.layers.filter((layer) => layer && layer.file).map((layer) => layer.file);
    const plain = {};
    const parsed = {};
    for (const name of names) {
      if (!rawByName[name]) throw new ThetaError(`${name}: missing (the manifest lists it)`);
      plain[name] = await plainBytes(rawByName[name], name);
      parsed[name] = parseTheta(plain[name], name);
    }
    const model = buildNetwork(manifest.layers, parsed, where);
    const files = manifest.files || {};
    const found = await Promise.all(names.map((name) => sha256Hex(plain[name])));
    const notes = [];
    if (found[0] === null) {
      notes.push('sha256 not checked (needs a secure context: https or localhost)');
    } else if (names.some((name, i) => !files[name] || files[name].sha256 !== found[i])) {
      notes.push("sha256 MISMATCH: these files are not the manifest's");
    } else {
      notes.push(`sha256 of all ${names.length} layer files match the manifest`);
    }
    notes.push(...accuracyNote(manifest));
    const info = { version: where, hidden: null, architecture: model.architecture, source, check: notes.join('; '), manifest };
    return { model, info };
  }

  async function fetchBytes(url) {
    const response = await fetch(url);
    if (!response.ok) throw new ThetaError(`${url}: HTTP ${response.status} ${response.statusText}`);
    return new Uint8Array(await response.arrayBuffer());
  }

  /** A version by URL: a manifest with `layers` brings its layer files from beside it (name, or
   *  name.gz); otherwise the theta1 and theta2 URLs are the seed's pair. */
  async function loadFromUrls(urls, source) {
    let manifest = null;
    if (urls.manifest) {
      try {
        manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(urls.manifest)));
      } catch (error) {
        if (error instanceof ThetaError) throw error;
        throw new ThetaError(`${urls.manifest}: not valid JSON (${error.message})`);
      }
    }
    if (manifest && manifest.layers) {
      const base = String(urls.manifest).replace(/[^/]*$/, '');
      const names = manifest.layers.filter((layer) => layer && layer.file).map((layer) => layer.file);
      const raws = await Promise.all(names.map(async (name) => {
        const response = await fetch(base + name);
        return response.ok ? new Uint8Array(await response.arrayBuffer()) : fetchBytes(`${base}${name}.gz`);
      }));
      return loadLayers(Object.fromEntries(names.map((name, i) => [name, raws[i]])), manifest, source);
    }
    if (!urls.theta1 || !urls.theta2) throw new ThetaError('give both ?theta1=URL and ?theta2=URL, or ?manifest=URL of an N-layer version');
    const [raw1, raw2] = await Promise.all([fetchBytes(urls.theta1), fetchBytes(urls.theta2)]);
    return loadModel(raw1, raw2, manifest, [baseName(urls.theta1), baseName(urls.theta2)], source);
  }

  function baseName(url) {
    return String(url).split(/[?#]/)[0].split('/').pop() || String(url);
  }

  // ---------------------------------------------------------------- forward pass

  function activate(values, activation) {
    if (activation === 'relu') {
      for (let i = 0; i < values.length; i++) values[i] = Math.max(values[i], 0);
    } else if (activation === 'sigmoid') {
      for (let i = 0; i < values.length; i++) values[i] = 0.5 + 0.5 * Math.tanh(0.5 * values[i]);
    } else if (activation === 'softmax') {
      const top = Math.max(...values);
      let total = 0;
      for (let i = 0; i < values.length; i++) { values[i] = Math.exp(values[i] - top); total += values[i]; }
      for (let i = 0; i < values.length; i++) values[i] /= total;
    }
    return values;
  }

  /** An N-layer model on one 28 x 28 x 1 digit, (row, column, channel) order throughout, as
   *  digits/network.py: a convolution's weight row for (dy, dx, c) is (dy * k + dx) * c_in + c. */
  function networkProbabilities(model, x) {
    let a = x;
    for (const s of model.steps) {
      const { height: h, width: w, channels: c } = s.input;
      const { height: oh, width: ow, channels: oc } = s.output;
      const out = new Float64Array(oh * ow * oc);
      if (s.op === 'maxpool') {
        out.fill(-Infinity);
        for (let y = 0; y < oh * s.size; y++) {
          for (let x_ = 0; x_ < ow * s.size; x_++) {
            const o = (Math.floor(y / s.size) * ow + Math.floor(x_ / s.size)) * oc;
            for (let k = 0; k < c; k++) out[o + k] = Math.max(out[o + k], a[(y * w + x_) * c + k]);
          }
        }
      } else if (s.op === 'conv') {
        for (let y = 0; y < oh; y++) {
          for (let x_ = 0; x_ < ow; x_++) {
            const o = (y * ow + x_) * oc;
            for (let k = 0; k < oc; k++) out[o + k] = s.bias[k];
            for (let dy = 0; dy < s.kernel; dy++) {
              const iy = y * s.stride + dy - s.pad[0];
              if (iy < 0 || iy >= h) continue;
              for (let dx = 0; dx < s.kernel; dx++) {
                const ix = x_ * s.stride + dx - s.pad[1];
                if (ix < 0 || ix >= w) continue;
                for (let ci = 0; ci < c; ci++) {
                  const value = a[(iy * w + ix) * c + ci];
                  if (value === 0) continue;
                  const row = ((dy * s.kernel + dx) * c + ci) * oc;
                  for (let k = 0; k < oc; k++) out[o + k] += value * s.weights[row + k];
                }
              }
            }
          }
        }
      } else {
        for (let k = 0; k < oc; k++) out[k] = s.bias[k];
        for (let i = 0; i < a.length; i++) {
          if (a[i] === 0) continue;
          const row = i * oc;
          for (let k = 0; k < oc; k++) out[k] += a[i] * s.weights[row + k];
        }
      }
      a = s.op === 'maxpool' ? out : activate(out, s.activation);
    }
    return Array.from(a);
  }

  /** The 10 class probabilities of one 784-vector, by the seed's MLP or an N-layer model. */
  function probabilities(model, pixels) {
    if (!pixels || pixels.length !== N_INPUT) {
      throw new RangeError(`expected ${N_INPUT} pixels, got ${pixels ? pixels.length : pixels}`);
    }
    if (model.steps) {
      const x = Float64Array.from(pixels, (v) => f32(Number(v)));
      if (!x.every(Number.isFinite)) throw new RangeError('a pixel is not a finite number');
      return networkProbabilities(model, x);
    }
    return mlpProbabilities(model, pixels);
  }

  /** softmax(sigmoid(x @ W1 + b1) @ W2 + b2) for one 784-vector; weights float32 as in Python. */
  function mlpProbabilities(model, pixels) {
    const { hidden, b1, w1, b2, w2 } = model;
    const z = Float64Array.from(b1);
    for (let i = 0; i < N_INPUT; i++) {
      const x = f32(Number(pixels[i]));
      if (!Number.isFinite(x)) throw new RangeError(`pixel ${i} is not a finite number`);
      if (x === 0) continue;
      const row = i * hidden;
      for (let j = 0; j < hidden; j++) z[j] += x * w1[row + j];
    }
    const logits = Float64Array.from(b2);
    for (let j = 0; j < hidden; j++) {
      const h = 0.5 + 0.5 * Math.tanh(0.5 * z[j]);  // the sigmoid, overflow-free, as in theta.py
      const row = j * N_CLASSES;
      for (let k = 0; k < N_CLASSES; k++) logits[k] += h * w2[row + k];
    }
    const top = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return Array.from(exps, (e) => e / total);
  }

  // ---------------------------------------------------------------- MNIST normalisation

  class BlankError extends Error {}

  /** Python's round(): halves go to the even neighbour. */
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  /** numpy.median of float32 values: the float32 mean of the two middle ones when even. */
  function median(values) {
    const s = Float64Array.from(values).sort();
    const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : f32(f32(s[n / 2 - 1] + s[n / 2]) / 2);
  }

  function std(values) {
    let mean = 0;
    for (const v of values) mean += v;
    mean /= values.length;
    let sq = 0;
    for (const v of values) sq += (v - mean) * (v - mean);
    return Math.sqrt(sq / values.length);
  }

  /** digits.images.normalise: greyscale (Float32Array, width x height, in [0, 1]) to 28 x 28, ink bright. */
  function normalise(greyIn, width, height) {
    let grey = Float32Array.from(greyIn);
    const borderOf = (g) => {
      const out = [];
      for (let x = 0; x < width; x++) out.push(g[x]);
      for (let x = 0; x < width; x++) out.push(g[(height - 1) * width + x]);
      for (let y = 0; y < height; y++) out.push(g[y * width]);
      for (let y = 0; y < height; y++) out.push(g[y * width + width - 1]);
      return Float32Array.from(out);
    };
    let border = borderOf(grey);
    if (median(border) > 0.5) {  // dark ink on light paper: flip to MNIST polarity
      grey = grey.map((v) => 1 - v);
      border = border.map((v) => 1 - v);
    }
    const background = median(border);
    const noiseFloor = Math.min(0.25, 3 * std(border));
    const ink = new Float32Array(grey.length);
    let peak = 0;
    for (let i = 0; i < grey.length; i++) {
      const v = Math.min(1, Math.max(0, f32(grey[i] - background)));
      ink[i] = v <= noiseFloor ? 0 : v;
      if (ink[i] > peak) peak = ink[i];
    }
    if (peak < MIN_CONTRAST) throw new BlankError('no digits found: the image is blank');
    const [top, bottom, left, right] = inkBox(ink, width, height, peak);
    const cropW = right - left;
    const cropH = bottom - top;
    let cropPeak = 0;
    for (let y = top; y < bottom; y++) {
      for (let x = left; x < right; x++) cropPeak = Math.max(cropPeak, ink[y * width + x]);
    }
    const crop = new Float32Array(cropW * cropH);
    for (let y = 0; y < cropH; y++) {
      for (let x = 0; x < cropW; x++) crop[y * cropW + x] = ink[(top + y) * width + left + x] / cropPeak;
    }
    const fitted = fitBox(crop, cropW, cropH);
    return centre(fitted.data, fitted.width, fitted.height);
  }

  /** digits.images.ink_box: the strong strokes' box, grown by up to `margin` px of fainter ink. */
  function inkBox(ink, width, height, peak, strong = 0.3, margin = 2) {
    const threshold = f32(f32(strong) * peak);
    let top = height, bottom = 0, left = width, right = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (ink[y * width + x] >= threshold) {
          top = Math.min(top, y); bottom = Math.max(bottom, y + 1);
          left = Math.min(left, x); right = Math.max(right, x + 1);
        }
      }
    }
    const rowAny = (y, x0, x1) => { for (let x = x0; x < x1; x++) if (ink[y * width + x] !== 0) return true; return false; };
    const colAny = (x, y0, y1) => { for (let y = y0; y < y1; y++) if (ink[y * width + x] !== 0) return true; return false; };
    for (let step = 0; step < margin; step++) {
      if (top > 0 && rowAny(top - 1, left, right)) top -= 1;
      if (bottom < height && rowAny(bottom, left, right)) bottom += 1;
      if (left > 0 && colAny(left - 1, top, bottom)) left -= 1;
      if (right < width && colAny(right, top, bottom)) right += 1;
    }
    return [top, bottom, left, right];
  }

  /** Pillow's Lanczos (a = 3) resampling coefficients for one axis, as Resample.c computes them. */
  function lanczosCoefficients(inSize, outSize) {
    const sinc = (x) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
    const lanczos = (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0);
    const scale = inSize / outSize;
    const filterScale = Math.max(scale, 1);
    const support = 3 * filterScale;
    const out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const centre = (xx + 0.5) * scale;
      const xmin = Math.max(0, Math.trunc(centre - support + 0.5));
      const xmax = Math.min(inSize, Math.trunc(centre + support + 0.5)) - xmin;
      const weights = new Float64Array(Math.max(0, xmax));
      let total = 0;
      for (let x = 0; x < xmax; x++) {
        weights[x] = lanczos((x + xmin - centre + 0.5) / filterScale);
        total += weights[x];
      }
      if (total !== 0) for (let x = 0; x < xmax; x++) weights[x] /= total;
      out.push({ xmin, weights });
    }
    return out;
  }

  /** Pillow's Image.resize(size, LANCZOS) for a mode "F" image: horizontal pass, then vertical. */
  function resizeLanczos(data, width, height, outW, outH) {
    let current = data, w = width;
    if (outW !== width) {
      const coeffs = lanczosCoefficients(width, outW);
      const next = new Float32Array(outW * height);
      for (let y = 0; y < height; y++) {
        for (let xx = 0; xx < outW; xx++) {
          const { xmin, weights } = coeffs[xx];
          let s = 0;
          for (let x = 0; x < weights.length; x++) s += current[y * w + xmin + x] * weights[x];
          next[y * outW + xx] = s;
        }
      }
      current = next;
      w = outW;
    }
    if (outH !== height) {
      const coeffs = lanczosCoefficients(height, outH);
      const next = new Float32Array(w * outH);
      for (let yy = 0; yy < outH; yy++) {
        const { xmin: ymin, weights } = coeffs[yy];
        for (let x = 0; x < w; x++) {
          let s = 0;
          for (let y = 0; y < weights.length; y++) s += current[(ymin + y) * w + x] * weights[y];
          next[yy * w + x] = s;
        }
      }
      current = next;
    }
    return current;
  }

  /** digits.images.fit_box: scale so the longer side is 20 px, keeping the aspect ratio. */
  function fitBox(crop, width, height) {
    const scale = BOX / Math.max(width, height);
    const outW = Math.max(1, roundHalfEven(width * scale));
    const outH = Math.max(1, roundHalfEven(height * scale));
    if (outW === width && outH === height) return { data: crop, width, height };
    const resized = resizeLanczos(crop, width, height, outW, outH).map((v) => Math.min(1, Math.max(0, v)));
    return { data: resized, width: outW, height: outH };
  }

  /** digits.images.centre: the centre of mass onto the centre of a 28 x 28 field. */
  function centre(digit, width, height) {
    let total = 0, sy = 0, sx = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = digit[y * width + x];
        total += v; sy += y * v; sx += x * v;
      }
    }
    const clip = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const top = clip(roundHalfEven(FIELD / 2 - sy / total), 0, FIELD - height);
    const left = clip(roundHalfEven(FIELD / 2 - sx / total), 0, FIELD - width);
    const field = new Float32Array(FIELD * FIELD);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) field[(top + y) * FIELD + left + x] = digit[y * width + x];
    }
    return field;
  }

  // ---------------------------------------------------------------- the page

  const pad = document.getElementById('pad');
  const padContext = pad.getContext('2d', { willReadFrequently: true });
  const inputCanvas = document.getElementById('input');
  const inputContext = inputCanvas.getContext('2d');
  const chart = document.getElementById('chart');
  const predictionText = document.getElementById('prediction');
  const statusText = document.getElementById('status');

  let current = null;       // {model, info}
  let loading = null;       // the promise of the model being loaded

  function setStatus(message, isError = false) {
    statusText.textContent = message;
    statusText.classList.toggle('error', isError);
  }

  function showInfo(info) {
    document.getElementById('model-version').textContent = info.version;
    document.getElementById('model-architecture').textContent = info.architecture;
    document.getElementById('model-source').textContent = info.source;
    document.getElementById('model-check').textContent = info.check;
  }

  function useModel(promise, label) {
    setStatus(`Loading ${label}…`);
    loading = promise.then((loaded) => {
      current = loaded;
      showInfo(loaded.info);
      setStatus(`Ready: ${loaded.info.architecture}, ${label}.`);
      update();
      return publicInfo();
    }, (error) => {
      setStatus(`Could not load ${label}: ${error.message}`, true);
      throw error;
    });
    window.modelReady = loading;
    loading.catch(() => {});  // reported on the page; callers awaiting modelReady still see it
    return loading;
  }

  function publicInfo() {
    if (!current) return null;
    const { version, hidden, architecture, source, check } = current.info;
    return { version, hidden, architecture, source, check };
  }

  function clearPad() {
    padContext.fillStyle = '#fff';
    padContext.fillRect(0, 0, pad.width, pad.height);
    update();
  }

  function canvasGrey() {
    const { data } = padContext.getImageData(0, 0, pad.width, pad.height);
    const grey = new Float32Array(pad.width * pad.height);
    for (let i = 0; i < grey.length; i++) {
      const [r, g, b, a] = [data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]];
      // Pillow's "L" conversion of the image composited on white paper, as digits.images.to_grey does.
      const over = (c) => Math.round((c * a + 255 * (255 - a)) / 255);
      const luma = (over(r) * 19595 + over(g) * 38470 + over(b) * 7471 + 0x8000) >> 16;
      grey[i] = luma / 255;
    }
    return grey;
  }

  function showInput(field) {
    const image = inputContext.createImageData(FIELD, FIELD);
    for (let i = 0; i < FIELD * FIELD; i++) {
      const v = field ? Math.round(255 * field[i]) : 0;
      image.data.set([v, v, v, 255], 4 * i);
    }
    inputContext.putImageData(image, 0, 0);
  }

  function buildChart() {
    chart.replaceChildren();
    for (let k = 0; k < N_CLASSES; k++) {
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.innerHTML = `<span class="value"></span><div class="fill" style="height:0"></div><span class="label">${k}</span>`;
      chart.appendChild(bar);
    }
  }

  function showProbabilities(probs) {
    const best = probs ? probs.indexOf(Math.max(...probs)) : -1;
    Array.from(chart.children).forEach((bar, k) => {
      const p = probs ? probs[k] : 0;
      bar.classList.toggle('best', k === best);
      bar.querySelector('.fill').style.height = `${(100 * p * 0.85).toFixed(2)}%`;
      bar.querySelector('.value').textContent = probs ? `${(100 * p).toFixed(1)}%` : '';
      bar.title = probs ? `${k}: ${p.toFixed(6)}` : '';
    });
    predictionText.textContent = probs ? `${best}  (${(100 * probs[best]).toFixed(1)}%)` : 'draw a digit';
    chart.dataset.probabilities = probs ? JSON.stringify(probs) : '';
  }

  /** Normalise the pad, show the 28 x 28 input and, with a model loaded, the probabilities. */
  function update() {
    let field = null;
    try {
      field = normalise(canvasGrey(), pad.width, pad.height);
    } catch (error) {
      if (!(error instanceof BlankError)) throw error;
    }
    showInput(field);
    showProbabilities(field && current ? probabilities(current.model, field) : null);
    return field;
  }

  // Drawing: pointer events cover mouse, touch and pen alike.
  let drawing = null;
  let pending = false;
  function scheduleUpdate() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; update(); });
  }
  function padPoint(event) {
    const rect = pad.getBoundingClientRect();  // includes the border; client* is the drawable content box
    return [(event.clientX - rect.left - pad.clientLeft) * pad.width / pad.clientWidth,
            (event.clientY - rect.top - pad.clientTop) * pad.height / pad.clientHeight];
  }
  function stroke(from, to) {
    padContext.strokeStyle = '#000';
    padContext.lineWidth = 20;
    padContext.lineCap = 'round';
    padContext.lineJoin = 'round';
    padContext.beginPath();
    padContext.moveTo(...from);
    padContext.lineTo(...to);
    padContext.stroke();
  }
  pad.addEventListener('pointerdown', (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    drawing = { id: event.pointerId, last: padPoint(event) };
    stroke(drawing.last, drawing.last);
    scheduleUpdate();
  });
  pad.addEventListener('pointermove', (event) => {
    if (!drawing || event.pointerId !== drawing.id) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of (events.length ? events : [event])) {
      const point = padPoint(e);
      stroke(drawing.last, point);
      drawing.last = point;
    }
    scheduleUpdate();
  });
  const endStroke = (event) => {
    if (!drawing || event.pointerId !== drawing.id) return;
    drawing = null;
    update();
  };
  pad.addEventListener('pointerup', endStroke);
  pad.addEventListener('pointercancel', endStroke);
  document.getElementById('clear').addEventListener('click', clearPad);

  // Other versions: two file pickers (and an optional manifest), or URLs; an N-layer version's
  // layer files in one picker, with its manifest.
  const pickers = ['theta1', 'theta2', 'manifest'].map((name) => document.getElementById(`file-${name}`));
  const layerPicker = document.getElementById('file-layers');
  const readFile = async (file) => new Uint8Array(await file.arrayBuffer());
  const readManifest = async (file) => {
    try {
      return JSON.parse(await file.text());
    } catch (error) {
      throw new ThetaError(`${file.name}: not valid JSON (${error.message})`);
    }
  };
  for (const picker of [...pickers, layerPicker]) {
    picker.addEventListener('change', () => {
      const [file1, file2, fileManifest] = pickers.map((p) => p.files[0]);
      if (layerPicker.files.length && fileManifest) {
        const label = `layer files ${Array.from(layerPicker.files, (f) => f.name).join(', ')}`;
        useModel((async () => {
          const raws = {};
          for (const file of layerPicker.files) raws[file.name.replace(/\.gz$/, '')] = await readFile(file);
          return loadLayers(raws, await readManifest(fileManifest), label);
        })(), label);
        return;
      }
      if (!file1 || !file2) return;
      const label = `files ${file1.name}, ${file2.name}`;
      useModel((async () => {
        let manifest = null;
        if (fileManifest) {
          try {
            manifest = JSON.parse(await fileManifest.text());
          } catch (error) {
            throw new ThetaError(`${fileManifest.name}: not valid JSON (${error.message})`);
          }
        }
        return loadModel(await readFile(file1), await readFile(file2), manifest, [file1.name, file2.name], label);
      })(), label);
    });
  }
  const form = document.getElementById('url-form');
  const params = new URLSearchParams(window.location.search);
  for (const name of ['theta1', 'theta2', 'manifest']) form.elements[name].value = params.get(name) || '';

  buildChart();
  padContext.fillStyle = '#fff';
  padContext.fillRect(0, 0, pad.width, pad.height);
  showInput(null);
  showProbabilities(null);

  if (params.has('theta1') || params.has('theta2') || params.has('manifest')) {
    const urls = { theta1: params.get('theta1'), theta2: params.get('theta2'), manifest: params.get('manifest') };
    const label = urls.theta1 || urls.theta2 ? `URLs ${urls.theta1}, ${urls.theta2}` : `URL ${urls.manifest}`;
    useModel(loadFromUrls(urls, label), label);
  } else {
    useModel(loadFromUrls(DEFAULT_MODEL, 'bundled default (digits/default_model/)'), 'the bundled default model')
      .catch((error) => setStatus(`Could not load the bundled default model (${error.message}): serve the ` +
                                  'repository root (python -m http.server -d .), or choose theta CSV files below.', true));
  }

  // ---------------------------------------------------------------- for tests and the console

  window.classifyPixels = async (pixels) => {
    await loading;
    return probabilities(current.model, Array.from(pixels));
  };
  window.normaliseCanvas = () => {
    const field = update();
    return field ? Array.from(field) : null;
  };
  window.canvasGrey = () => Array.from(canvasGrey());
  window.setCanvasGrey = (values, width, height) => {
    if (width !== pad.width || height !== pad.height || values.length !== width * height) {
      throw new RangeError(`expected ${pad.width} x ${pad.height} values`);
    }
    const image = padContext.createImageData(width, height);
    for (let i = 0; i < values.length; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, values[i])));
      image.data.set([v, v, v, 255], 4 * i);
    }
    padContext.putImageData(image, 0, 0);
    return window.normaliseCanvas();
  };
  window.modelInfo = publicInfo;
  window.digitsDemo = { normalise, probabilities, parseTheta, resizeLanczos };
})();
