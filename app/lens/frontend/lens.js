/*
 * Latent lens (Streamlit components v2): the latent map, the latent sliders and the
 * decoded image, decoded in the browser with onnxruntime-web (WebAssembly, one thread)
 * on every pointer/key event, at most once per animation frame. Python hears from it
 * only when an interaction ends (slider release, pointer leaving the map, a click),
 * once per ~150 ms burst: setStateValue('update', {z, selected, source, event, runtime}).
 *
 * Contract with app/lens/__init__.py: `data` is lens_data()'s dict. Streamlit calls the
 * default export again with the same parentElement whenever `data` changes; everything
 * (DOM, session, local z) lives in one Lens object per parentElement.
 *
 * Hooks for tests and benchmarks (read-only, cost nothing when unused): the root element
 * `.latent-lens[data-key=KEY]` has data-runtime ("loading" | "wasm" | "server"),
 * data-decodes (browser decodes so far) and data-decoded-z (JSON of the float32 z last
 * drawn); `canvas.lens-image` holds the decoded pixels (H x W, getImageData);
 * window.__latentLens[KEY].timings() -> the last 512 decodes as {type, t_first, t_last,
 * t_painted, decode_ms}: performance.now() clock, t_first/t_last the timestamps of the
 * oldest/newest input event the frame served, t_painted right after putImageData.
 *
 * Data is untrusted (run folders): every string from it goes through textContent.
 * The pure maths below is exported for tests (tests/test_lens.py runs it with node).
 */

const ORT_DIR = './vendor/onnxruntime-web/';
const ORT_BUNDLE = 'ort.wasm.bundle.min.mjs';
const ORT_WASM = 'ort-wasm-simd-threaded.wasm';
export const K_NEIGHBOURS = 10;
const SEND_DELAY_MS = 150;
const TIMING_RING = 512;
const HOVER_PX = 8;
const CLICK_PX = 6;
const MARKER_GRAB_PX = 10;
const MARGIN = { left: 46, right: 12, top: 10, bottom: 38 };
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f',
  '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

// ------------------------------------------------------------------ pure maths

/** Base64 text -> bytes. */
export function b64ToBytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Base64 of little-endian float32 -> Float32Array (null for null). */
export function f32(text) {
  if (text == null) return null;
  const bytes = b64ToBytes(text);
  return new Float32Array(bytes.buffer, 0, bytes.byteLength >> 2);
}

/** Base64 of little-endian int32 -> Int32Array (null for null). */
export function i32(text) {
  if (text == null) return null;
  const bytes = b64ToBytes(text);
  return new Int32Array(bytes.buffer, 0, bytes.byteLength >> 2);
}

/** Axis ranges [x0, x1, y0, y1] of the points with `pad` of the span on each side. */
export function paddedRange(xy, n, pad = 0.06) {
  let x0 = Infinity; let x1 = -Infinity; let y0 = Infinity; let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i]; const y = xy[2 * i + 1];
    if (x < x0) x0 = x; if (x > x1) x1 = x;
    if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  if (!(x1 >= x0)) { x0 = -1; x1 = 1; }
  if (!(y1 >= y0)) { y0 = -1; y1 = 1; }
  if (x1 - x0 < 1e-9) { x0 -= 0.5; x1 += 0.5; }
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const dx = (x1 - x0) * pad; const dy = (y1 - y0) * pad;
  return [x0 - dx, x1 + dx, y0 - dy, y1 + dy];
}

/** "Nice" tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi], about `target`. */
export function ticks(lo, hi, target = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

/** PCA inverse: z = mean + [px, py] @ components, components (2, D) row-major. */
export function pcaInverse(px, py, mean, comps, D) {
  const z = new Float64Array(D);
  for (let d = 0; d < D; d++) z[d] = mean[d] + px * comps[d] + py * comps[D + d];
  return z;
}

/** PCA forward (training/projection.apply_pca): (z - mean) @ components.T. */
export function pcaForward(z, mean, comps, D) {
  let x = 0; let y = 0;
  for (let d = 0; d < D; d++) {
    const c = z[d] - mean[d];
    x += c * comps[d]; y += c * comps[D + d];
  }
  return [x, y];
}

/** The k smallest of dist2At(0..count-1): {idx, d2} in ascending order. */
export function kNearest(count, dist2At, k) {
  const kk = Math.max(1, Math.min(k, count));
  const idx = new Int32Array(kk).fill(-1);
  const d2 = new Float64Array(kk).fill(Infinity);
  for (let i = 0; i < count; i++) {
    const d = dist2At(i);
    if (!(d < d2[kk - 1])) continue;
    let j = kk - 1;
    while (j > 0 && d2[j - 1] > d) { d2[j] = d2[j - 1]; idx[j] = idx[j - 1]; j--; }
    d2[j] = d; idx[j] = i;
  }
  return { idx, d2 };
}

/** Inverse-distance-weighted mean of rows of `values` (row width `width`) over the
 * neighbours `near`, weights 1 / max(distance, 1e-6) (training/projection.py). */
export function idwMean(near, values, width) {
  const out = new Float64Array(width);
  let wsum = 0;
  // an exact match (distance <= 1e-6) takes the place alone, as place_by_neighbours does
  let exact = false;
  for (let j = 0; j < near.idx.length; j++) {
    if (near.idx[j] >= 0 && Math.sqrt(Math.max(near.d2[j], 0)) <= 1e-6) exact = true;
  }
  for (let j = 0; j < near.idx.length; j++) {
    if (near.idx[j] < 0) continue;
    const dist = Math.sqrt(Math.max(near.d2[j], 0));
    if (exact && dist > 1e-6) continue;
    const w = exact ? 1 : 1 / Math.max(dist, 1e-6);
    wsum += w;
    const row = near.idx[j] * width;
    for (let c = 0; c < width; c++) out[c] += w * values[row + c];
  }
  for (let c = 0; c < width; c++) out[c] /= wsum;
  return out;
}

/** t-SNE lens: z under map point (px, py) = IDW mean of the mu of the k nearest points
 * in MAP space (t-SNE has no inverse). */
export function mapToLatentIDW(px, py, xy, mu, n, D, k = K_NEIGHBOURS) {
  const near = kNearest(n, (i) => {
    const dx = xy[2 * i] - px; const dy = xy[2 * i + 1] - py;
    return dx * dx + dy * dy;
  }, k);
  return idwMean(near, mu, D);
}

/** Where z lands on a t-SNE map: training/projection.place_by_neighbours, the IDW mean
 * of the map positions of the k nearest mu in LATENT space. */
export function latentToMapIDW(z, mu, xy, n, D, k = K_NEIGHBOURS) {
  const near = kNearest(n, (i) => {
    let s = 0;
    const row = i * D;
    for (let d = 0; d < D; d++) { const c = z[d] - mu[row + d]; s += c * c; }
    return s;
  }, k);
  const p = idwMean(near, xy, 2);
  return [p[0], p[1]];
}

/** Decoder output (C, H, W) -> RGBA bytes: sigmoid for logits, clip to [0, 1], round
 * to 0..255; one channel is drawn grey. */
export function toRGBA(values, C, H, W, applySigmoid, rgba) {
  const plane = H * W;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      let v = values[(C === 3 ? c : 0) * plane + p];
      if (applySigmoid) v = 1 / (1 + Math.exp(-v));
      v = v > 1 ? 1 : v < 0 || Number.isNaN(v) ? 0 : v;
      rgba[4 * p + c] = Math.round(v * 255);
    }
    rgba[4 * p + 3] = 255;
  }
  return rgba;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

function fmt(v, digits = 2) {
  if (!Number.isFinite(v)) return String(v);
  const r = Number(v.toFixed(digits));
  return (Object.is(r, -0) ? 0 : r).toFixed(digits);
}

function tickText(v, step) {
  const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(digits);
}

// ------------------------------------------------------------------ runtime (shared)

let ortPromise = null;
const sessions = new Map(); // decoder sha256 -> Promise<{ort, session, input, output}>

function loadOrt() {
  if (!ortPromise) {
    ortPromise = (async () => {
      if (typeof WebAssembly !== 'object' || typeof WebAssembly.instantiate !== 'function') {
        throw new Error('this browser has no WebAssembly');
      }
      const here = new URL(import.meta.url);
      if (here.protocol !== 'http:' && here.protocol !== 'https:') {
        throw new Error('the component\'s files are not served by the app');
      }
      const base = new URL(ORT_DIR, here);
      const ort = await import(new URL(ORT_BUNDLE, base).href);
      ort.env.wasm.numThreads = 1; // the page is not cross-origin isolated
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmPaths = { wasm: new URL(ORT_WASM, base).href };
      ort.env.logLevel = 'error';
      return ort;
    })();
  }
  return ortPromise;
}

async function createSession(model) {
  const t0 = performance.now();
  const ort = await loadOrt();
  const t1 = performance.now();
  let bytes;
  if (model.b64) {
    bytes = b64ToBytes(model.b64);
  } else {
    const url = new URL(model.url, document.baseURI);
    if (url.origin !== window.location.origin) throw new Error('the decoder is not on the app server');
    const response = await fetch(url.href, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`the decoder could not be fetched (HTTP ${response.status})`);
    bytes = new Uint8Array(await response.arrayBuffer());
  }
  const t2 = performance.now();
  if (globalThis.crypto && crypto.subtle) { // secure contexts only (https, localhost)
    const digest = hex(await crypto.subtle.digest('SHA-256', bytes));
    if (digest !== model.sha256) throw new Error('the decoder file does not match its SHA-256');
  }
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['wasm'], graphOptimizationLevel: 'all',
  });
  const t3 = performance.now();
  return {
    ort, session, input: session.inputNames[0], output: session.outputNames[0],
    load: { ort_ms: t1 - t0, fetch_ms: t2 - t1, session_ms: t3 - t2 },
  };
}

/** One session per decoder sha256 for the page's life: never refetched on a rerun. */
function getSession(model) {
  let p = sessions.get(model.sha256);
  if (!p) {
    p = createSession(model);
    sessions.set(model.sha256, p);
  }
  return p;
}

// ------------------------------------------------------------------ DOM helpers

function el(tag, className, parent, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function sameModel(a, b) {
  return a && b && a.sha256 === b.sha256 && a.latent_dim === b.latent_dim
    && a.output === b.output && a.shape.join() === b.shape.join();
}

// ------------------------------------------------------------------ the component

const memory = new Map(); // user key -> {z, zVersion, sha, selected, counter} across remounts

// Map payloads by content hash. The arrays travel in a separate element of the same
// component (data.role === 'map') whose data stays byte-identical across reruns, so
// Streamlit's message cache sends it once per browser session; the lens's own data
// (z, server image, ...) only names the hash.
const mapStore = new Map();
const liveLenses = new Set();

function publishMap(m) {
  if (!m || !m.hash) return;
  if (!mapStore.has(m.hash)) {
    mapStore.set(m.hash, m);
    while (mapStore.size > 4) mapStore.delete(mapStore.keys().next().value);
  }
  for (const lens of liveLenses) if (lens.wantMap === m.hash) lens.receiveMap();
}

class Lens {
  constructor(host) {
    this.host = host;
    this.destroyed = false;
    this.key = '';
    this.model = null;
    this.session = null;
    this.runtime = 'loading';
    this.painted = false; // the canvas holds a browser decode
    this.z = null;
    this.zVersion = null;
    this.selected = null;
    this.pySelected = undefined;
    this.counter = 0;
    this.decodes = 0;
    this.timings = [];
    this.pending = null;
    this.inFlight = false;
    this.raf = 0;
    this.sendTimer = 0;
    this.sendSource = null;
    this.lensDirty = false;
    this.pinned = false; // a click pins z: the lens rests until the pointer leaves the map
    this.grabbed = false; // pressed on the × marker
    this.dragMarker = false; // ... and moved: dragging it
    this.downAt = null;
    this.hover = -1;
    this.map = null;
    this.mapHash = null;
    this.sliderSpec = '';
    this.serverPng = null;
    this.shape = null;

    const root = el('div', 'latent-lens');
    this.root = root;
    root.dataset.runtime = 'loading';
    root.dataset.decodes = '0';
    const body = el('div', 'lens-body', root);

    this.mapCol = el('div', 'lens-map-col', body);
    this.mapWrap = el('div', 'lens-map-wrap', this.mapCol);
    this.baseCanvas = el('canvas', 'lens-map-base', this.mapWrap);
    this.overlay = el('canvas', 'lens-map-overlay', this.mapWrap);
    this.overlay.tabIndex = 0;
    this.overlay.setAttribute('role', 'img');
    this.overlay.setAttribute('aria-label', 'latent map');
    this.tooltip = el('div', 'lens-tooltip', this.mapWrap);
    this.tooltip.hidden = true;
    this.legend = el('div', 'lens-legend', this.mapCol);
    const footer = el('div', 'lens-map-footer', this.mapCol);
    const toggle = el('label', 'lens-toggle', footer);
    this.lensBox = el('input', '', toggle);
    this.lensBox.type = 'checkbox';
    this.lensBox.checked = true;
    el('span', '', toggle, 'Lens follows the pointer (click to pin)');
    this.caption = el('div', 'lens-caption', footer);

    const side = el('div', 'lens-side', body);
    const frame = el('div', 'lens-image-frame', side);
    this.image = el('canvas', 'lens-image', frame);
    this.image.setAttribute('aria-label', 'decoded image');
    this.serverImg = el('img', 'lens-server-image', frame);
    this.serverImg.alt = 'decoded image (server)';
    this.status = el('div', 'lens-status', side);
    this.statusDot = el('span', 'lens-dot', this.status);
    this.statusText = el('span', '', this.status);
    this.notice = el('div', 'lens-notice', side);
    this.notice.hidden = true;
    this.notice.setAttribute('role', 'status');
    this.sliderBox = el('div', 'lens-sliders', side);
    this.more = el('details', 'lens-more', side);
    this.moreSummary = el('summary', '', this.more);
    this.moreBox = el('div', 'lens-sliders', this.more);
    host.appendChild(root);
    liveLenses.add(this);

    this.onMove = (e) => this.pointerMove(e);
    this.onDown = (e) => this.pointerDown(e);
    this.onUp = (e) => this.pointerUp(e);
    this.onLeave = (e) => this.pointerLeave(e);
    this.overlay.addEventListener('pointermove', this.onMove);
    this.overlay.addEventListener('pointerdown', this.onDown);
    this.overlay.addEventListener('pointerup', this.onUp);
    this.overlay.addEventListener('pointerleave', this.onLeave);
    this.overlay.addEventListener('pointercancel', this.onLeave);
    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(this.mapWrap);
    this.setRuntime('loading');
  }

  destroy() {
    this.destroyed = true;
    liveLenses.delete(this);
    this.resizeObserver.disconnect();
    if (this.raf) cancelAnimationFrame(this.raf);
    if (this.sendTimer) { // a report still waiting: send it now
      clearTimeout(this.sendTimer);
      try { this.flushSend(); } catch (err) { console.warn('latent lens: last report lost', err); }
    }
    if (window.__latentLens && window.__latentLens[this.key]
        && window.__latentLens[this.key].root === this.root) delete window.__latentLens[this.key];
    this.root.remove();
  }

  // ---------------------------------------------------------------- data from Python

  update(data, setStateValue) {
    this.setStateValue = setStateValue;
    const model = data.model;
    const D = model.latent_dim;
    if (this.key !== data.id) {
      this.key = String(data.id);
      this.root.dataset.key = this.key;
    }
    this.expose();
    this.counter = Math.max(this.counter, data.last_event | 0);

    const modelChanged = !sameModel(this.model, model);
    const remembered = memory.get(this.key);
    let zFromPython = false;
    if (this.z === null && remembered && remembered.zVersion === data.z_version
        && remembered.sha === model.sha256 && remembered.z.length === D) {
      this.z = Float64Array.from(remembered.z); // remount: keep the user's z
      this.zVersion = remembered.zVersion;
      this.selected = remembered.selected;
      this.counter = Math.max(this.counter, remembered.counter);
    } else if (this.z === null || data.z_version !== this.zVersion || this.z.length !== D
               || modelChanged) {
      this.z = Float64Array.from(data.z);
      this.zVersion = data.z_version;
      zFromPython = true;
    }
    if (data.selected !== this.pySelected) { // Python changed the selection
      this.selected = data.selected;
      this.pySelected = data.selected;
    }
    if (this.selected != null && (!data.map || this.selected >= data.map.n)) this.selected = null;
    this.sigma = data.sigma;
    this.uploadXY = data.upload_xy;

    const spec = JSON.stringify([D, data.sliders]);
    if (spec !== this.sliderSpec) { this.sliderSpec = spec; this.buildSliders(D, data.sliders); }
    this.syncSliders();

    const shape = model.shape;
    if (!this.shape || this.shape.join() !== shape.join()) this.setShape(shape);
    if (data.server_png !== this.serverPng) {
      this.serverPng = data.server_png;
      if (data.server_png) this.serverImg.src = data.server_png; else this.serverImg.removeAttribute('src');
      this.showImage();
    }

    this.D = D;
    if (data.map) {
      if (data.map.xy !== undefined) publishMap(data.map); // the arrays came inline
      this.wantMap = data.map.hash;
      if (this.wantMap !== this.mapHash) this.receiveMap();
    } else if (this.map || this.mapHash === null) {
      this.wantMap = null;
      this.map = null; this.mapHash = ''; this.mapCol.hidden = true;
    }
    const height = data.height | 0;
    if (height && this.mapWrap.style.height !== `${height}px`) {
      this.mapWrap.style.height = `${height}px`;
    }
    this.layout();

    this.model = model;
    if (modelChanged) this.startRuntime(model);
    else if (zFromPython && this.runtime === 'wasm') this.scheduleDecode('python', performance.now());
    this.remember();
  }

  expose() {
    const api = window.__latentLens || (window.__latentLens = {});
    const self = this;
    api[this.key] = {
      root: this.root,
      timings: () => self.timings.slice(),
      clearTimings: () => { self.timings.length = 0; },
      get runtime() { return self.runtime; },
      get decodes() { return self.decodes; },
      get sha() { return (self.model && self.model.sha256) || null; },
      get z() { return Array.from(self.z || []); },
      get loadTimes() { return self.loadTimes || null; },
      get mapTimes() { return self.mapTimes || null; },
      get selected() { return self.selected; },
      /** Viewport (client) coordinates of map point `row`, or null without a map. */
      pointXY: (row) => (self.map && self.size && row >= 0 && row < self.map.n
        ? self.clientXY(self.map.xy[2 * row], self.map.xy[2 * row + 1]) : null),
      /** Viewport coordinates of the × marker as drawn (at the map's edge when z is off it). */
      markerXY: () => {
        if (!self.markerAt) return null;
        const box = self.overlay.getBoundingClientRect();
        return { x: box.left + self.markerAt.x, y: box.top + self.markerAt.y };
      },
      /** Viewport coordinates of map position (x, y) in data units, or null. */
      clientXY: (x, y) => (self.map && self.size ? self.clientXY(x, y) : null),
    };
  }

  remember() {
    memory.set(this.key, {
      z: Array.from(this.z), zVersion: this.zVersion, sha: this.model && this.model.sha256,
      selected: this.selected, counter: this.counter,
    });
  }

  // ---------------------------------------------------------------- runtime

  setRuntime(runtime, reason) {
    this.runtime = runtime;
    this.root.dataset.runtime = runtime;
    const wasm = runtime === 'wasm';
    if (!wasm) this.painted = false;
    this.showImage();
    this.statusDot.dataset.state = runtime;
    this.statusText.textContent = wasm ? 'Decoded in your browser (wasm)'
      : runtime === 'loading' ? 'Decoded on the server · loading the in-browser decoder…'
        : 'Decoded on the server';
    if (runtime === 'server' && reason) {
      this.notice.textContent = `Live decoding is off (${reason}): the image follows when you `
        + 'release a slider or leave the map.';
      this.notice.hidden = false;
    } else if (wasm) {
      this.notice.hidden = true;
    }
  }

  /** The browser's canvas once it has painted a decode, else the server's image. */
  showImage() {
    const canvas = this.runtime === 'wasm' && this.painted;
    this.image.hidden = !canvas;
    this.serverImg.hidden = canvas || !this.serverPng;
  }

  startRuntime(model) {
    this.session = null;
    if (!model.url && !model.b64) {
      this.setRuntime('server', 'no decoder file for this run');
      return;
    }
    if (typeof WebAssembly !== 'object') { // decided at once: no download, no waiting
      this.setRuntime('server', 'this browser has no WebAssembly');
      return;
    }
    this.setRuntime('loading');
    const start = () => {
      if (this.destroyed || !sameModel(this.model, model)) return;
      getSession(model).then((s) => {
        if (this.destroyed || !sameModel(this.model, model)) return;
        this.session = s;
        this.loadTimes = s.load;
        this.setRuntime('wasm');
        this.scheduleDecode('ready', performance.now());
      }).catch((err) => {
        if (this.destroyed || !sameModel(this.model, model)) return;
        this.fail(err);
      });
    };
    // First paint first: the server's image is already there; load after the frame.
    requestAnimationFrame(() => setTimeout(start, 0));
  }

  fail(err) {
    const message = (err && err.message) ? err.message : String(err);
    console.warn('latent lens: decoding in the browser failed:', err);
    this.session = null;
    this.setRuntime('server', message.length > 120 ? `${message.slice(0, 117)}…` : message);
  }

  // ---------------------------------------------------------------- decoding

  /** Ask for a decode of the current z: at most one per frame, never queued behind one
   * in flight (only the newest z is kept). `t` is the event's timestamp. */
  scheduleDecode(type, t) {
    if (this.runtime !== 'wasm') return;
    const job = this.pending;
    this.pending = { z: Float32Array.from(this.z), type, t0: job ? job.t0 : t, t1: t };
    if (!this.raf && !this.inFlight) this.raf = requestAnimationFrame(() => this.frame());
  }

  frame() {
    this.raf = 0;
    if (this.inFlight || !this.pending || !this.session || this.destroyed) return;
    const job = this.pending;
    this.pending = null;
    this.inFlight = true;
    this.decode(job).catch((err) => this.fail(err)).finally(() => {
      this.inFlight = false;
      if (this.pending && this.runtime === 'wasm' && !this.raf) {
        this.raf = requestAnimationFrame(() => this.frame());
      }
    });
  }

  async decode(job) {
    const s = this.session;
    const [C, H, W] = this.shape;
    const input = new s.ort.Tensor('float32', job.z, [1, job.z.length]);
    const t0 = performance.now();
    const out = await s.session.run({ [s.input]: input });
    const values = out[s.output].data;
    const t1 = performance.now();
    if (this.destroyed || s !== this.session) return;
    if (values.length !== C * H * W) {
      throw new Error(`the decoder gives ${values.length} values, the image has ${C * H * W}`);
    }
    toRGBA(values, C, H, W, this.model.output === 'logits', this.imageData.data);
    this.imageCtx.putImageData(this.imageData, 0, 0);
    const painted = performance.now();
    if (!this.painted) { this.painted = true; this.showImage(); }
    this.decodes += 1;
    this.root.dataset.decodes = String(this.decodes);
    this.root.dataset.decodedZ = JSON.stringify(Array.from(job.z));
    this.timings.push({ type: job.type, t_first: job.t0, t_last: job.t1, t_painted: painted,
      decode_ms: t1 - t0 });
    if (this.timings.length > TIMING_RING) this.timings.shift();
  }

  setShape(shape) {
    this.shape = shape.slice();
    const [, H, W] = shape;
    this.image.width = W;
    this.image.height = H;
    this.imageCtx = this.image.getContext('2d');
    this.imageData = this.imageCtx.createImageData(W, H);
  }

  // ---------------------------------------------------------------- messages to Python

  /** Report z once the interaction ends; a burst within SEND_DELAY_MS is one message. */
  queueSend(source) {
    if (this.sendSource !== 'click') this.sendSource = source;
    if (this.sendTimer) clearTimeout(this.sendTimer);
    this.sendTimer = setTimeout(() => this.flushSend(), SEND_DELAY_MS);
  }

  flushSend() {
    this.sendTimer = 0;
    const source = this.sendSource || 'slider';
    this.sendSource = null;
    if (!this.setStateValue || !this.z) return;
    this.counter += 1;
    this.remember();
    this.setStateValue('update', {
      z: Array.from(this.z), selected: this.selected == null ? null : this.selected,
      source, event: this.counter, runtime: this.runtime,
    });
  }

  /** z changed here (slider, lens): follow on the sliders and the map, decode. */
  localZ(type, t) {
    this.syncSliders();
    this.drawOverlay();
    this.scheduleDecode(type, t);
    this.remember();
  }

  // ---------------------------------------------------------------- sliders

  buildSliders(D, spec) {
    this.sliderBox.replaceChildren();
    this.moreBox.replaceChildren();
    this.rows = new Array(D);
    spec.order.forEach((d, rank) => {
      const box = rank < spec.visible ? this.sliderBox : this.moreBox;
      const row = el('div', 'lens-slider', box);
      const label = el('label', '', row);
      const name = el('span', 'lens-slider-name', label, `z${d}`);
      const value = el('span', 'lens-slider-value', label);
      const input = el('input', '', row);
      input.type = 'range';
      input.min = String(spec.lo[d]);
      input.max = String(spec.hi[d]);
      input.step = String((spec.hi[d] - spec.lo[d]) / 400);
      input.setAttribute('aria-label', `z${d}`);
      input.dataset.dim = String(d);
      if (spec.help[d]) { row.title = spec.help[d]; name.title = spec.help[d]; }
      input.addEventListener('input', (e) => {
        this.z[d] = input.valueAsNumber;
        this.localZ('slider', e.timeStamp);
      });
      input.addEventListener('change', () => this.queueSend('slider'));
      input.addEventListener('keydown', (e) => { // arrows: 1 % of the range (Shift: 10 %)
        const sign = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[e.key];
        if (!sign) return;
        e.preventDefault();
        const span = spec.hi[d] - spec.lo[d];
        input.value = String(this.z[d] + sign * span * (e.shiftKey ? 0.1 : 0.01));
        this.z[d] = input.valueAsNumber;
        this.localZ('slider', e.timeStamp);
        this.queueSend('slider');
      });
      this.rows[d] = { input, value };
    });
    const hidden = D - spec.visible;
    this.more.hidden = hidden <= 0;
    this.moreSummary.textContent = `More dimensions (${hidden})`;
  }

  syncSliders() {
    if (!this.rows || !this.z) return;
    for (let d = 0; d < this.rows.length; d++) {
      const row = this.rows[d];
      if (!row) continue;
      const v = this.z[d];
      row.value.textContent = fmt(v);
      if (row.input.valueAsNumber !== v) row.input.value = String(v);
    }
  }

  // ---------------------------------------------------------------- the map

  /** Take the map this lens wants from the shared store (its carrier element may render
   * after the lens; publishMap() calls back then). */
  receiveMap() {
    const m = this.wantMap && mapStore.get(this.wantMap);
    if (!m || m.hash === this.mapHash || this.destroyed) return;
    this.setMap(m, this.D);
    this.layout();
  }

  setMap(m, D) {
    const t0 = performance.now();
    this.mapHash = m.hash;
    const map = {
      projection: m.projection, n: m.n, D, xy: f32(m.xy), labels: i32(m.labels),
      index: i32(m.index), recon: f32(m.recon), kl: f32(m.kl), mu: f32(m.mu),
      mean: f32(m.pca_mean), comps: f32(m.pca_components), names: m.class_names,
      colours: m.colours, xTitle: m.x_title, yTitle: m.y_title,
    };
    map.range = paddedRange(map.xy, map.n);
    this.map = map;
    this.mapCol.hidden = false;
    this.hover = -1;
    // legend: classes present, in class order
    const present = new Set(map.labels);
    this.legend.replaceChildren();
    [...present].sort((a, b) => a - b).forEach((c) => {
      const item = el('span', 'lens-legend-item', this.legend);
      el('span', 'lens-swatch', item).style.background = this.colour(c);
      el('span', '', item, map.names[c] != null ? String(map.names[c]) : String(c));
    });
    const caption = {
      raw: D === 2 ? 'Raw latent axes: the map is the latent space; the lens decodes the point under the pointer.'
        : `Raw axes z0, z1: the lens sets z0 and z1; the other ${D - 2} dimensions keep their slider values.`,
      pca: `PCA: the lens decodes z = mean + p · components, a 2-D slice through the ${D}-D latent space.`,
      tsne: `t-SNE has no inverse: the lens decodes the distance-weighted mean of the latent means of the ${K_NEIGHBOURS} nearest points on the map.`,
    }[map.projection];
    this.caption.textContent = caption;
    this.baseKey = '';
    this.mapTimes = { parse_ms: performance.now() - t0, draw_ms: null };
  }

  colour(c) {
    const list = this.map && this.map.colours && this.map.colours.length ? this.map.colours : PALETTE;
    return list[((c % list.length) + list.length) % list.length];
  }

  layout() {
    if (!this.map) return;
    const w = Math.max(50, Math.round(this.mapWrap.clientWidth));
    const h = Math.max(50, Math.round(this.mapWrap.clientHeight));
    const dpr = window.devicePixelRatio || 1;
    const key = `${w}x${h}@${dpr}:${this.mapHash}`;
    if (key === this.baseKey) { this.drawOverlay(); return; }
    this.baseKey = key;
    for (const canvas of [this.baseCanvas, this.overlay]) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
    }
    this.size = { w, h, dpr };
    const [x0, x1, y0, y1] = this.map.range;
    const pw = w - MARGIN.left - MARGIN.right; const ph = h - MARGIN.top - MARGIN.bottom;
    this.sx = pw / (x1 - x0); this.sy = ph / (y1 - y0);
    this.drawBase();
    this.drawOverlay();
  }

  clientXY(x, y) {
    const box = this.overlay.getBoundingClientRect();
    return { x: box.left + this.px(x), y: box.top + this.py(y) };
  }

  px(x) { return MARGIN.left + (x - this.map.range[0]) * this.sx; }

  py(y) { return MARGIN.top + (this.map.range[3] - y) * this.sy; }

  toData(p) {
    const [x0, x1, y0, y1] = this.map.range;
    const x = x0 + (p.x - MARGIN.left) / this.sx;
    const y = y1 - (p.y - MARGIN.top) / this.sy;
    return [Math.min(x1, Math.max(x0, x)), Math.min(y1, Math.max(y0, y))];
  }

  /** The theme's colours as rgb() strings (the CSS variables in lens.css follow
   * Streamlit's light or dark theme); resolved through a probe element, once per base draw. */
  themeColours() {
    if (!this.probe) { this.probe = el('span', 'lens-probe', this.root); this.probe.hidden = true; }
    const out = {};
    for (const name of ['bg', 'grid', 'axis', 'muted', 'text', 'halo', 'ring']) {
      this.probe.style.color = `var(--lens-${name})`;
      out[name] = getComputedStyle(this.probe).color;
    }
    // presenter mode (app/presenter.py) sets --lens-canvas-font-scale on the root
    const scale = parseFloat(getComputedStyle(this.root).getPropertyValue('--lens-canvas-font-scale'));
    out.font = (px) => `${Math.round(px * (scale > 0 ? scale : 1))}px sans-serif`;
    return out;
  }

  drawBase() {
    const t0 = performance.now();
    const { w, h, dpr } = this.size;
    const map = this.map;
    const col = this.colours = this.themeColours();
    const ctx = this.baseCanvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const [x0, x1, y0, y1] = map.range;
    const left = MARGIN.left; const top = MARGIN.top;
    const right = w - MARGIN.right; const bottom = h - MARGIN.bottom;
    ctx.fillStyle = col.bg;
    ctx.fillRect(left, top, right - left, bottom - top);
    ctx.font = col.font(11);
    ctx.lineWidth = 1;
    const xt = ticks(x0, x1, Math.max(2, Math.round((right - left) / 90)));
    const yt = ticks(y0, y1, Math.max(2, Math.round((bottom - top) / 60)));
    const xs = xt.length > 1 ? xt[1] - xt[0] : 1; const ys = yt.length > 1 ? yt[1] - yt[0] : 1;
    ctx.strokeStyle = col.grid;
    ctx.fillStyle = col.muted;
    ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    for (const v of xt) {
      const x = Math.round(this.px(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillText(tickText(v, xs), x, bottom + 4);
    }
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    for (const v of yt) {
      const y = Math.round(this.py(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.fillText(tickText(v, ys), left - 5, y);
    }
    ctx.strokeStyle = col.axis;
    ctx.strokeRect(left + 0.5, top + 0.5, right - left - 1, bottom - top - 1);
    ctx.fillStyle = col.text;
    ctx.font = col.font(12);
    ctx.textAlign = 'center'; ctx.textBaseline = 'bottom';
    if (map.xTitle) ctx.fillText(map.xTitle, (left + right) / 2, h - 2);
    if (map.yTitle) {
      ctx.save(); ctx.translate(11, (top + bottom) / 2); ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = 'middle'; ctx.fillText(map.yTitle, 0, 0); ctx.restore();
    }
    // points, one path per class
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, right - left, bottom - top); ctx.clip();
    const r = map.n > 3000 ? 1.8 : map.n > 1000 ? 2.4 : 3.2;
    const byClass = new Map();
    for (let i = 0; i < map.n; i++) {
      const c = map.labels[i];
      if (!byClass.has(c)) byClass.set(c, []);
      byClass.get(c).push(i);
    }
    ctx.globalAlpha = 0.8;
    for (const [c, rows] of [...byClass.entries()].sort((a, b) => a[0] - b[0])) {
      ctx.fillStyle = this.colour(c);
      ctx.beginPath();
      for (const i of rows) {
        const x = this.px(map.xy[2 * i]); const y = this.py(map.xy[2 * i + 1]);
        ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
      }
      ctx.fill();
    }
    ctx.restore();
    if (this.mapTimes) this.mapTimes.draw_ms = performance.now() - t0;
  }

  /** z -> map position of the × marker (raw: z[:2]; PCA: forward; t-SNE: IDW in latent
   * space, as training/projection.place_by_neighbours). */
  forward(z) {
    const m = this.map;
    if (m.projection === 'pca') return pcaForward(z, m.mean, m.comps, m.D);
    if (m.projection === 'tsne') return latentToMapIDW(z, m.mu, m.xy, m.n, m.D);
    return [z[0], z[1]];
  }

  /** Map position -> z for the lens. */
  inverse(x, y) {
    const m = this.map;
    if (m.projection === 'pca') return pcaInverse(x, y, m.mean, m.comps, m.D);
    if (m.projection === 'tsne') return mapToLatentIDW(x, y, m.xy, m.mu, m.n, m.D);
    const z = Float64Array.from(this.z);
    z[0] = x; z[1] = y;
    return z;
  }

  drawOverlay() {
    if (!this.map || !this.size) return;
    const { w, h, dpr } = this.size;
    const m = this.map;
    const ctx = this.overlay.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, w - MARGIN.left - MARGIN.right, h - MARGIN.top - MARGIN.bottom);
    ctx.clip();
    const col = this.colours || this.themeColours();
    const sel = this.selected;
    if (sel != null && sel < m.n) {
      const x = this.px(m.xy[2 * sel]); const y = this.py(m.xy[2 * sel + 1]);
      if (this.sigma && m.projection === 'raw') {
        for (const k of [1, 2]) { // 1σ solid, 2σ dashed, each on a halo
          ctx.setLineDash(k === 1 ? [] : [5, 4]);
          for (const [colour, width] of [[col.halo, 3.5], [col.ring, 1.6]]) {
            ctx.strokeStyle = colour; ctx.lineWidth = width;
            ctx.beginPath();
            ctx.ellipse(x, y, Math.max(0.5, k * this.sigma[0] * this.sx),
              Math.max(0.5, k * this.sigma[1] * this.sy), 0, 0, 2 * Math.PI);
            ctx.stroke();
          }
        }
        ctx.setLineDash([]);
      }
      ctx.lineWidth = 2.5; ctx.strokeStyle = col.bg;
      ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
      ctx.lineWidth = 1.8; ctx.strokeStyle = col.text;
      ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
    }
    if (this.hover >= 0 && this.hover !== sel) {
      const x = this.px(m.xy[2 * this.hover]); const y = this.py(m.xy[2 * this.hover + 1]);
      ctx.lineWidth = 1.5; ctx.strokeStyle = col.muted;
      ctx.beginPath(); ctx.arc(x, y, 5.5, 0, 2 * Math.PI); ctx.stroke();
    }
    ctx.restore();
    if (sel != null && sel < m.n && this.sigma && m.projection === 'raw') this.zoomInset(ctx, sel, col);
    if (this.uploadXY) this.star(ctx, this.clampX(this.px(this.uploadXY[0])), this.clampY(this.py(this.uploadXY[1])));
    if (this.z) {
      const [zx, zy] = this.forward(this.z);
      const x = this.clampX(this.px(zx)); const y = this.clampY(this.py(zy));
      this.markerAt = { x, y };
      ctx.globalAlpha = x === this.px(zx) && y === this.py(zy) ? 1 : 0.45; // off the map: at its edge
      for (const [colour, width] of [[col.bg, 5], [col.text, 2.2]]) {
        ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.lineCap = 'round';
        ctx.beginPath();
        ctx.moveTo(x - 6, y - 6); ctx.lineTo(x + 6, y + 6);
        ctx.moveTo(x + 6, y - 6); ctx.lineTo(x - 6, y + 6);
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }
  }

  /** A posterior too small to see at the map's scale (the 2-D demo VAE's σ is ~0.05 of a
   * map 8 units wide: its 1σ ellipse would hide under the selection ring) is also drawn
   * magnified in an inset, top right, with its zoom factor written on it: the selected
   * μ, its 1σ/2σ ellipses and the nearby points, at k times the map's scale. */
  zoomInset(ctx, sel, col) {
    const m = this.map;
    const rx = this.sigma[0] * this.sx; const ry = this.sigma[1] * this.sy;
    if (Math.max(rx, ry) >= 14) return; // visible on the map itself
    const size = 112; const pad = 6;
    const ix = this.size.w - MARGIN.right - size - pad; const iy = MARGIN.top + pad;
    const half = size / 2 - 8;
    const k = Math.max(1, half / (2.2 * Math.max(rx, ry, 0.5))); // 2σ fills the inset
    const cx = m.xy[2 * sel]; const cy = m.xy[2 * sel + 1];
    const X = (v) => ix + size / 2 + (v - cx) * this.sx * k;
    const Y = (v) => iy + size / 2 - (v - cy) * this.sy * k;
    ctx.save();
    ctx.fillStyle = col.bg; ctx.strokeStyle = col.axis; ctx.lineWidth = 1;
    ctx.fillRect(ix, iy, size, size); ctx.strokeRect(ix + 0.5, iy + 0.5, size - 1, size - 1);
    ctx.beginPath(); ctx.rect(ix, iy, size, size); ctx.clip();
    const reach = (size / 2) / (this.sx * k);
    ctx.globalAlpha = 0.7;
    for (let i = 0; i < m.n; i++) {
      const px = m.xy[2 * i]; const py = m.xy[2 * i + 1];
      if (Math.abs(px - cx) > reach * 1.2 || Math.abs(py - cy) > reach * 1.2 * this.sx / this.sy) continue;
      ctx.fillStyle = this.colour(m.labels[i]);
      ctx.beginPath(); ctx.arc(X(px), Y(py), 2.4, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (const s of [1, 2]) {
      ctx.setLineDash(s === 1 ? [] : [5, 4]);
      ctx.strokeStyle = col.ring; ctx.lineWidth = 1.6;
      ctx.beginPath();
      ctx.ellipse(X(cx), Y(cy), s * rx * k, s * ry * k, 0, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.fillStyle = col.text;
    ctx.beginPath(); ctx.arc(X(cx), Y(cy), 2.5, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = col.bg; // label bands, so points never run through the words
    ctx.fillRect(ix + 1, iy + 1, size - 2, 16); ctx.fillRect(ix + 1, iy + size - 17, size - 2, 16);
    ctx.font = '11px sans-serif'; ctx.textAlign = 'left'; ctx.textBaseline = 'top';
    ctx.fillStyle = col.text;
    ctx.fillText(`zoom ×${k >= 10 ? Math.round(k) : k.toFixed(1)}`, ix + 5, iy + 4);
    ctx.textBaseline = 'bottom';
    ctx.fillStyle = col.muted;
    ctx.fillText('q(z|x): 1σ, 2σ', ix + 5, iy + size - 3);
    ctx.restore();
  }

  clampX(x) { return Math.min(this.size.w - MARGIN.right, Math.max(MARGIN.left, x)); }

  clampY(y) { return Math.min(this.size.h - MARGIN.bottom, Math.max(MARGIN.top, y)); }

  star(ctx, x, y) {
    ctx.beginPath();
    for (let i = 0; i < 10; i++) {
      const r = i % 2 ? 4 : 10; const a = -Math.PI / 2 + (i * Math.PI) / 5;
      ctx[i ? 'lineTo' : 'moveTo'](x + r * Math.cos(a), y + r * Math.sin(a));
    }
    ctx.closePath();
    ctx.fillStyle = '#edc948'; ctx.fill();
    ctx.lineWidth = 1.5; ctx.strokeStyle = '#31333f'; ctx.stroke();
  }

  /** Row of the point nearest to canvas position p within `limit` px, or -1. */
  nearest(p, limit) {
    const m = this.map;
    let best = -1; let bestD = limit * limit;
    for (let i = 0; i < m.n; i++) {
      const dx = this.px(m.xy[2 * i]) - p.x; const dy = this.py(m.xy[2 * i + 1]) - p.y;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = i; }
    }
    return best;
  }

  point(e) {
    const box = this.overlay.getBoundingClientRect();
    return { x: e.clientX - box.left, y: e.clientY - box.top };
  }

  showTooltip(i, p) {
    const m = this.map;
    if (i < 0) { this.tooltip.hidden = true; return; }
    const name = m.names[m.labels[i]] != null ? String(m.names[m.labels[i]]) : String(m.labels[i]);
    const index = m.index ? m.index[i] : i;
    const lines = [`${name} · #${index}`];
    const parts = [];
    if (m.recon) parts.push(`recon ${fmt(m.recon[i], 1)} nats`);
    if (m.kl) parts.push(`KL ${fmt(m.kl[i], 1)} nats`);
    if (parts.length) lines.push(parts.join(' · '));
    this.tooltip.textContent = lines.join('\n');
    this.tooltip.hidden = false;
    const tw = this.tooltip.offsetWidth; const th = this.tooltip.offsetHeight;
    let x = p.x + 12; let y = p.y + 12;
    if (x + tw > this.size.w) x = p.x - tw - 12;
    if (y + th > this.size.h) y = p.y - th - 12;
    this.tooltip.style.left = `${Math.max(0, x)}px`;
    this.tooltip.style.top = `${Math.max(0, y)}px`;
  }

  lensTo(p, t) {
    const [x, y] = this.toData(p);
    this.z = this.inverse(x, y);
    this.lensDirty = true;
    this.localZ('lens', t);
  }

  pointerMove(e) {
    if (!this.map || !this.size) return;
    const p = this.point(e);
    if (this.grabbed && !this.dragMarker && this.downAt
        && Math.hypot(this.downAt.x - p.x, this.downAt.y - p.y) > 3) this.dragMarker = true;
    if (this.dragMarker) { this.lensTo(p, e.timeStamp); return; }
    const i = this.nearest(p, HOVER_PX);
    const lens = this.lensBox.checked && !this.pinned && (e.pointerType !== 'touch' || this.downAt);
    if (i !== this.hover) { this.hover = i; if (!lens) this.drawOverlay(); }
    this.showTooltip(i, p);
    if (lens) this.lensTo(p, e.timeStamp);
  }

  pointerDown(e) {
    if (!this.map || !this.size || e.button > 0) return;
    const p = this.point(e);
    this.downAt = p;
    const mk = this.markerAt;
    // The × can be dragged whenever it is not already following the pointer; a press
    // that does not move is still a click (on a point: select it).
    if (mk && (!this.lensBox.checked || this.pinned)
        && Math.hypot(mk.x - p.x, mk.y - p.y) <= MARKER_GRAB_PX) {
      this.grabbed = true;
      this.overlay.setPointerCapture(e.pointerId);
      e.preventDefault();
    }
  }

  pointerUp(e) {
    if (!this.map || !this.size) return;
    const p = this.point(e);
    const down = this.downAt;
    this.downAt = null;
    this.grabbed = false;
    if (this.overlay.hasPointerCapture(e.pointerId)) this.overlay.releasePointerCapture(e.pointerId);
    if (this.dragMarker) {
      this.dragMarker = false;
      this.lensDirty = false;
      this.pinned = true;
      this.queueSend('lens');
      return;
    }
    if (!down || Math.hypot(down.x - p.x, down.y - p.y) > 5) return;
    const i = this.nearest(p, CLICK_PX);
    const m = this.map;
    if (i >= 0) {
      this.selected = i;
      this.hover = -1;
      this.z = this.inverse(m.xy[2 * i], m.xy[2 * i + 1]);
      this.lensDirty = false;
      this.localZ('click', e.timeStamp);
      this.queueSend('click');
    } else {
      this.lensTo(p, e.timeStamp);
      this.lensDirty = false;
      this.queueSend('lens');
    }
    this.pinned = true;
  }

  pointerLeave() {
    this.tooltip.hidden = true;
    this.pinned = false;
    if (this.hover !== -1) { this.hover = -1; this.drawOverlay(); }
    if (this.dragMarker) return;
    this.downAt = null;
    if (this.lensDirty) { this.lensDirty = false; this.queueSend('lens'); }
  }
}

const instances = new WeakMap();

export default function latentLens(component) {
  const { parentElement, data, setStateValue } = component;
  if (data && data.role === 'map') { // the map's carrier: no DOM of its own
    publishMap(data.map);
    return undefined;
  }
  if (!data || !data.model) return undefined;
  let lens = instances.get(parentElement);
  if (!lens || lens.destroyed) {
    lens = new Lens(parentElement);
    instances.set(parentElement, lens);
  }
  lens.update(data, setStateValue);
  return () => {
    lens.destroy();
    instances.delete(parentElement);
  };
}
