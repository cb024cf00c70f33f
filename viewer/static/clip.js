// Loading a clip's frames for the viewports (viewer.js draws them). One
// interface whatever the delivery: viewer.js asks only what is ready and
// what to draw, so how frames travel can change without touching drawing.
//
//   const clip = await Clip.open(uids);   // one multi-frame instance, or a
//                                         // stack of single-frame instances
//   clip.meta            the first instance's /meta
//   clip.count           number of frames
//   clip.times[i]        display time of frame i, ms
//   clip.width, height   image pixels (columns, rows)
//   clip.ready(i)        frame i can be drawn now
//   clip.source(i, display)  a CanvasImageSource of frame i, or null;
//                        display = {center, width, invert} when clip.windowing
//   clip.windowing       true when the clip applies window/level itself
//                        (stored values reach the browser), else false and
//                        the viewer adjusts brightness/contrast
//   clip.defaultWindow   {center, width} to start from when windowing
//   clip.close()         stop loading (another series was opened)
//   clip.loaded          a Promise settled once every frame has arrived
//   clip.values(i)       frame i as numbers, or null: grey the stored values
//                        (masked, signed; rescale not applied), colour RGB
//                        triplets (tests, pixel probes)
//
// How frames travel (viewer/frames.py): with meta.delivery "raw" a range of
// frames comes in one response (/raw/A-B) as the bytes /meta describes, read
// as a stream, each frame ready as soon as its bytes are in; the first range
// is one frame (first view at once), then ranges double up to
// meta.per_request, one after another in playing order from the frame shown.
// Frame URLs carry meta.version (the stored content), so the browser keeps
// them for good yet never shows a replaced instance's old pixels.
// Grey is windowed here through a lookup table over every stored code (VOI
// LINEAR, LINEAR_EXACT or SIGMOID after the rescale; MONOCHROME1 inverted);
// colour is copied into RGBA. Frames are kept as they came (Clip.budget bytes
// at most: beyond it, the ones needed last are dropped and fetched again).
// JPEG baseline ("jpeg") and PNG ("image") frames are <img> elements.
"use strict";

(() => {
  const IN_FLIGHT = 1; // one range at a time: frames arrive in playing order (as fast as two)
  const RETRIES = 3;

  async function json(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    return response.json();
  }

  function deferred() {
    const out = {};
    out.promise = new Promise((resolve, reject) => Object.assign(out, { resolve, reject }));
    out.promise.catch(() => {}); // a failure is reported where it is awaited
    return out;
  }

  // The stored content's version in a frame URL: cached for good under it,
  // and a replaced instance (new version) is never drawn from the old one.
  const version = (meta) => `?v=${encodeURIComponent(meta.version)}`;

  // Display time of each frame: /meta lists them only when they differ.
  const frameTimes = (meta) => meta.frame_times_ms || new Array(meta.frames).fill(meta.frame_time_ms);

  // One <img> per frame: JPEG as stored (the browser converts YBR once) or PNG.
  async function imageClip(uids, meta) {
    let urls, times;
    if (meta.frames > 1 || uids.length === 1) {
      urls = Array.from({ length: meta.frames }, (_, i) => `/api/instances/${uids[0]}/frames/${i + 1}${version(meta)}`);
      times = frameTimes(meta);
    } else { // a stack of single-frame instances (their versions unknown: revalidated)
      urls = uids.map((uid) => `/api/instances/${uid}/frames/1`);
      times = urls.map(() => 1000 / Math.max(meta.fps, 1));
    }
    const images = urls.map((url) => { const img = new Image(); img.src = url; return img; });
    await images[0].decode();
    const ready = (i) => Boolean(images[i] && images[i].complete && images[i].naturalWidth);
    const loaded = Promise.all(images.map((img) => img.decode()));
    loaded.catch(() => {}); // a failure is reported where it is awaited
    return {
      meta, times, count: images.length,
      width: images[0].naturalWidth, height: images[0].naturalHeight,
      windowing: false, defaultWindow: null,
      loaded,
      ready,
      source: (i) => (ready(i) ? images[i] : null),
      values: () => null,
      close() { images.forEach((img) => { if (!img.complete) img.src = ""; }); },
    };
  }

  // A stored code (the raw sample) as its value: bits above BitsStored
  // dropped, shifted down from HighBit, sign-extended.
  function codeValue(f) {
    const shift = f.high + 1 - f.stored, mask = 2 ** f.stored - 1, half = 2 ** (f.stored - 1);
    return (code) => {
      const v = (code >>> shift) & mask;
      return f.signed && v >= half ? v - 2 * half : v;
    };
  }

  // Display level 0-255 of a rescaled value through the VOI window (PS3.3 C.11.2.1.2).
  function voi(fn, center, width) {
    const c = center, w = Math.max(width, fn === "LINEAR" ? 1 : 1e-6);
    if (fn === "SIGMOID") return (x) => 255 / (1 + Math.exp((-4 * (x - c)) / w));
    if (fn === "LINEAR_EXACT") {
      return (x) => (x <= c - w / 2 ? 0 : x > c + w / 2 ? 255 : ((x - c) / w + 0.5) * 255);
    }
    return (x) => (x <= c - 0.5 - (w - 1) / 2 ? 0 : x > c - 0.5 + (w - 1) / 2 ? 255
      : ((x - (c - 0.5)) / (w - 1) + 0.5) * 255);
  }

  async function rawClip(uid, meta) {
    const f = meta.raw, n = meta.frames, width = meta.columns, height = meta.rows;
    const grey = f.samples === 1;
    const value = codeValue(f);
    const slope = meta.rescale.slope, intercept = meta.rescale.intercept;
    const frames = new Array(n).fill(null); // raw codes of each frame (typed-array views)
    const fetching = new Uint8Array(n);
    const seen = new Uint8Array(n);
    const chunks = []; // what is held, dropped whole when over the budget
    const stop = new AbortController();
    const first = deferred(), all = deferred();
    let held = 0, size = 1, want = 0, inFlight = 0, arrived = 0, failures = 0, closed = false;

    const view = (buffer, offset) => (f.bits === 16
      ? new Uint16Array(buffer, offset, f.bytes / 2) : new Uint8Array(buffer, offset, f.bytes));

    function arrive(i, data) {
      frames[i] = data;
      if (i === 0) first.resolve();
      if (!seen[i]) { seen[i] = 1; arrived += 1; if (arrived === n) all.resolve(); }
    }

    function fail(error) {
      console.error("clip", uid, error);
      first.reject(error);
      all.reject(error);
    }

    // The next range to fetch: from the frame shown on, the first frames
    // neither held nor on their way.
    function nextRange() {
      for (let k = 0; k < n; k++) {
        const i = (want + k) % n;
        if (frames[i] || fetching[i]) continue;
        let count = 1;
        // Half the budget at most: the range being played and the next fit.
        const limit = Math.min(size, meta.per_request, Math.max(1, Math.floor(window.Clip.budget / f.bytes / 2)));
        while (count < limit && i + count < n && !frames[i + count] && !fetching[i + count]) count++;
        return [i, count];
      }
      return null;
    }

    // Over the budget, drop the held ranges needed last, never one needed
    // before the range about to come.
    function makeRoom(bytes, last) {
      const ahead = (c) => (c.first + c.count - 1 - want + n) % n;
      while (held + bytes > window.Clip.budget) {
        let worst = null;
        for (const c of chunks) if (c.done && (!worst || ahead(c) > ahead(worst))) worst = c;
        if (!worst || ahead(worst) <= (last - want + n) % n) return false;
        chunks.splice(chunks.indexOf(worst), 1);
        for (let i = worst.first; i < worst.first + worst.count; i++) frames[i] = null;
        held -= worst.bytes;
      }
      return true;
    }

    function pump() {
      while (!closed && failures <= RETRIES && inFlight < IN_FLIGHT) {
        const range = nextRange();
        if (!range || !makeRoom(range[1] * f.bytes, range[0] + range[1] - 1)) return;
        size = Math.min(size * 2, meta.per_request);
        load(...range);
      }
    }

    async function load(start, count) {
      const chunk = { first: start, count, bytes: count * f.bytes, done: false };
      chunks.push(chunk);
      held += chunk.bytes;
      inFlight += 1;
      fetching.fill(1, start, start + count);
      let ready = 0;
      try {
        const buffer = new ArrayBuffer(chunk.bytes), into = new Uint8Array(buffer);
        const url = `/api/instances/${uid}/raw/${start + 1}-${start + count}${version(meta)}`;
        const response = await fetch(url, { signal: stop.signal });
        if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
        const reader = response.body.getReader();
        for (let at = 0; ;) {
          const { done, value: bytes } = await reader.read();
          if (done) break;
          if (at + bytes.length > buffer.byteLength) throw new Error("more bytes than frames");
          into.set(bytes, at);
          at += bytes.length;
          for (; (ready + 1) * f.bytes <= at; ready++) arrive(start + ready, view(buffer, ready * f.bytes));
        }
        if (ready < count) throw new Error("the answer ended before its last frame");
      } catch (error) {
        if (closed) return;
        failures += 1;
        if (failures > RETRIES) fail(error);
      } finally {
        chunk.done = true;
        inFlight -= 1;
        fetching.fill(0, start, start + count);
        if (!closed) pump();
      }
    }

    // Drawing: one canvas per clip, redrawn only when the frame or window changes.
    const canvas = document.createElement("canvas");
    Object.assign(canvas, { width, height });
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(width, height);
    const out = new Uint32Array(image.data.buffer);
    let drawn = null, drawnData = null, lut = null, lutKey = null;

    function greyTable(d) {
      const key = `${d.center}|${d.width}|${Boolean(d.invert)}`;
      if (key === lutKey) return lut;
      const level = voi(meta.voi_function, d.center, d.width);
      const invert = (meta.photometric === "MONOCHROME1") !== Boolean(d.invert);
      lut = new Uint32Array(2 ** f.bits);
      for (let code = 0; code < lut.length; code++) {
        let y = Math.round(Math.min(255, Math.max(0, level(value(code) * slope + intercept))));
        if (invert) y = 255 - y;
        lut[code] = 0xff000000 | (y << 16) | (y << 8) | y;
      }
      lutKey = key;
      return lut;
    }

    function paint(data, d) {
      if (grey) {
        const table = greyTable(d);
        for (let p = 0; p < out.length; p++) out[p] = table[data[p]];
      } else if (f.planar) {
        const plane = width * height;
        for (let p = 0; p < plane; p++) {
          out[p] = 0xff000000 | (data[p + 2 * plane] << 16) | (data[p + plane] << 8) | data[p];
        }
      } else {
        for (let p = 0, s = 0; p < out.length; p++, s += 3) {
          out[p] = 0xff000000 | (data[s + 2] << 16) | (data[s + 1] << 8) | data[s];
        }
      }
      ctx.putImageData(image, 0, 0);
    }

    pump();
    await first.promise;
    let defaultWindow = null;
    if (grey) {
      if (meta.window) defaultWindow = { center: meta.window.center, width: meta.window.width };
      else {
        let lo = Infinity, hi = -Infinity;
        for (const code of frames[0]) {
          const x = value(code) * slope + intercept;
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
        if (f.bits === 8 && !f.signed && slope === 1 && intercept === 0) [lo, hi] = [0, 255];
        defaultWindow = { center: (lo + hi) / 2 + 0.5, width: Math.max(hi - lo + 1, 1) };
      }
    }

    const clip = {
      meta, times: frameTimes(meta), count: n, width, height,
      windowing: grey, defaultWindow, loaded: all.promise,
      ready: (i) => Boolean(frames[i]),
      source(i, display) {
        want = i;
        if (!closed && inFlight < IN_FLIGHT) pump();
        const data = frames[i];
        if (!data) return null;
        const d = grey ? display || { ...defaultWindow, invert: false } : null;
        const key = d ? `${i}|${d.center}|${d.width}|${Boolean(d.invert)}` : `${i}`;
        if (drawn !== key || drawnData !== data) {
          paint(data, d);
          drawn = key;
          drawnData = data;
        }
        return canvas;
      },
      values(i) {
        const data = frames[i];
        if (!data) return null;
        if (grey) return Int32Array.from(data, value);
        if (!f.planar) return new Uint8Array(data);
        const plane = width * height, rgb = new Uint8Array(3 * plane);
        for (let p = 0; p < plane; p++) {
          rgb[3 * p] = data[p]; rgb[3 * p + 1] = data[p + plane]; rgb[3 * p + 2] = data[p + 2 * plane];
        }
        return rgb;
      },
      close() {
        closed = true;
        stop.abort();
        frames.fill(null);
        chunks.length = 0;
      },
    };
    return clip;
  }

  window.Clip = {
    budget: 1024 * 2 ** 20, // bytes of frames one clip keeps in the browser
    async open(uids) {
      const meta = await json(`/api/instances/${uids[0]}/meta`);
      if (meta.delivery === "raw" && (meta.frames > 1 || uids.length === 1)) return rawClip(uids[0], meta);
      return imageClip(uids, meta);
    },
  };
})();
