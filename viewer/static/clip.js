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
"use strict";

window.Clip = {
  async open(uids) {
    const first = uids[0];
    const meta = await (await fetch(`/api/instances/${first}/meta`)).json();
    let urls, times;
    if (meta.frames > 1 || uids.length === 1) {
      urls = Array.from({ length: meta.frames }, (_, i) => `/api/instances/${first}/frames/${i + 1}`);
      times = meta.frame_times_ms;
    } else { // a stack of single-frame instances
      urls = uids.map((uid) => `/api/instances/${uid}/frames/1`);
      times = urls.map(() => 1000 / Math.max(meta.fps, 1));
    }
    const images = urls.map((url) => { const img = new Image(); img.src = url; return img; });
    await images[0].decode();
    const ready = (i) => Boolean(images[i] && images[i].complete && images[i].naturalWidth);
    return {
      meta, times, count: images.length,
      width: images[0].naturalWidth, height: images[0].naturalHeight,
      windowing: false, defaultWindow: null,
      ready,
      source: (i) => (ready(i) ? images[i] : null),
      close() { images.forEach((img) => { if (!img.complete) img.src = ""; }); },
    };
  },
};
