"""Optical character recognition over cleaned pixels: verify, don't assume.

Echo machines and cath labs burn the child's name, ID and birth date into the
pixels. The node blanks the areas it knows about (``pixels.py``); this module
reads what is left with Tesseract so that an image still carrying identity
text, or text inside an area the node claims it blanked, is caught.

Why Tesseract through ``tesserocr`` (its C API in-process, models loaded
once) and not ``pytesseract`` (a ``tesseract`` process per call, models
loaded each time): on a real 600x800 echo frame, pass one below (eng+rus)
takes 0.13 s against 0.28 s at 1x and 0.24 s against 0.47 s at 2x, and the
re-reads are many small calls where a process start would dominate. The
PyPI wheel bundles libtesseract 5.5, so nothing is compiled; the language
data are Debian's (``tesseract-ocr-*``).

How a frame is read (each step measured on synthetic and real echo frames
with planted text, see ``tests/test_ocr.py``):

1. Brightness: the brightest channel, so white, yellow and cyan text are all
   bright. Where the background is busy (speckle, a shaded band) only bright
   or coloured pixels are kept, which removes most speckle: Tesseract spends
   less time on noise and finds lines in the sector it would otherwise miss.
2. Pass one: the whole frame inverted (dark on light), upscaled 2x (text is
   8-16 px high; Tesseract wants ~30), sparse-text segmentation, English and
   Russian. It finds the lines and reads most Latin, Cyrillic and digits.
3. Re-reads: a line is cut out, scaled to 48 px high and read as one line by
   the models pass one cannot stand in for: Kazakh and Tajik where it read
   Cyrillic (their own letters otherwise come out as Russian look-alikes),
   Russian where it read only Latin letters Cyrillic capitals look like
   (ПЕТРОВА comes out NETPOBA), Simplified Chinese and English+Russian again
   where it was unsure. A model costs ~10 ms a line, a full-frame pass with
   chi_sim ~0.2 s more, kaz+tgk ~0.2 s more: hence targeted re-reads, capped
   per frame, lines on black (where banners are) first.
   Coloured text over bright speckle gets a pass of its own on the chroma
   (tissue is grey): yellow and cyan text inside the sector went from 13 to
   42 read of 51 planted.
4. Ink on black that no line covers (two small Chinese characters beside the
   sector's apex, which Tesseract's page layout drops) is read as a block.
"""

from __future__ import annotations

import os

# Before libtesseract is loaded: the node runs on two cores with several DIMSE
# threads, so one OCR call must not fan out over OpenMP threads (the wheel's
# build has no OpenMP; a libtesseract built with it, as Debian's is, would).
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

PASS_ONE = "eng+rus"
REREAD_CYRILLIC = ("kaz", "tgk")
REREAD_UNSURE = ("eng+rus", "chi_sim")
REREAD_LOOKALIKE = ("rus",)
LANGUAGES = ("eng", "rus", "chi_sim", "kaz", "tgk")
TESSDATA_CANDIDATES = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
SCALE = 2  # pass one upscaling
LINE_HEIGHT = 48  # re-read lines are scaled to this many pixels high
BUSY_LIT = 16  # a pixel brighter than this is "lit" (speckle, band, text)
BUSY_SHARE = 0.5  # a neighbourhood more lit than this is a busy background
BUSY_RADIUS = 16
INK_MARGIN = 48  # the bright-ink pass keeps pixels this close to the frame's brightest
INK_SHARE = 0.08  # ... when they are at most this share of the frame
DARK = 16  # black as echo machines and the node's blanking leave it
MIN_LINE_HEIGHT = 6  # smaller "lines" are speckle, not burned-in text
BRIGHT = 128  # on a busy background only pixels brighter than this can be text
SURE = 85  # pass-one line confidence above which Latin text is not re-read
MAX_REREAD_LINES = 16  # per frame
COLOURED_PIXELS = 30  # fewer strongly coloured pixels than this: no coloured text
INK = 60  # on black, what is brighter than this is ink (grey text is ~150)
CELL = 4  # grid of the ink-cluster search, pixels
MAX_CLUSTER_HEIGHT = 64  # taller clusters are graphics (colour bars, traces)
CALM_CLUSTER = 0.9  # share of black round a cluster for it to be text on black
UNREAD_SHARE = 0.25  # a cluster with more ink than this outside read lines is re-read
MAX_CLUSTERS = 8  # per frame
MIN_CONFIDENCE = 40.0  # a word below this is noise for the blanked-area check
WORKERS = max(1, min(os.cpu_count() or 1, 2))  # engines (and OCR calls) at once

_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Capital Cyrillic that English reads as Latin: ПЕТРОВА АННА comes out NETPOBA AHHA.
_LOOKALIKE = re.compile(r"[ABCEHKMNOPTXY]")
_LATIN = re.compile(r"[A-Za-z]")
_KIND = re.compile(r"[a-z][a-z _-]{0,23}")


class OcrUnavailable(RuntimeError):
    """Tesseract or one of its languages is missing: nothing can be verified."""


@dataclass(frozen=True)
class Word:
    """One word as read, its box in the input image's pixels."""

    text: str
    left: int
    top: int
    width: int
    height: int
    confidence: float  # 0-100, Tesseract's


@dataclass(frozen=True)
class Verdict:
    """What verification found; ``reason`` never carries the text read."""

    reason: str | None  # None: nothing found; else one line for an administrator
    frames_read: int
    seconds: float


# --- engines ----------------------------------------------------------------


def tessdata_dir() -> Path | None:
    """Where the traineddata files are: TESSDATA_PREFIX, else Debian's layout.

    The wheel's bundled libtesseract has a compiled-in path that is not
    Debian's, so the path is always passed explicitly."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_CANDIDATES]
    candidates += sorted(map(str, Path("/usr/share/tesseract-ocr").glob("*/tessdata")))
    for candidate in candidates:
        if candidate and (Path(candidate) / "eng.traineddata").is_file():
            return Path(candidate)
    return None


def available() -> bool:
    """Tesseract (the binding) and every language the node reads are present."""
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        return False
    folder = tessdata_dir()
    return folder is not None and all(
        (folder / f"{lang}.traineddata").is_file() for lang in LANGUAGES
    )


class _Engines:
    """One Tesseract handle per language set, used by one thread at a time.

    Handles are not thread-safe and cost tens of MB and ~0.1 s to load, so a
    small pool of engine sets is created lazily and shared, at most WORKERS
    at once: more concurrent OCR than cores would only slow every caller."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.apis: dict[str, Any] = {}

    def api(self, lang: str, psm: int) -> Any:
        """The handle for ``lang`` (loaded on first use), set to ``psm``."""
        import tesserocr

        if lang not in self.apis:
            self.apis[lang] = tesserocr.PyTessBaseAPI(
                path=str(self.folder), lang=lang, oem=tesserocr.OEM.LSTM_ONLY
            )
        api = self.apis[lang]
        api.SetPageSegMode(psm)
        return api


_pool: queue.LifoQueue[_Engines] = queue.LifoQueue()
_pool_lock = threading.Lock()
_pool_created = 0


@contextmanager
def _engines() -> Iterator[_Engines]:
    """An engine set for the caller alone; waits while WORKERS are busy."""
    global _pool_created
    folder = tessdata_dir()
    if folder is None or not available():
        raise OcrUnavailable("tesserocr or a Tesseract language pack is not installed")
    try:
        engines = _pool.get_nowait()
    except queue.Empty:
        with _pool_lock:
            create = _pool_created < WORKERS
            if create:
                _pool_created += 1
        engines = _Engines(folder) if create else _pool.get()
    try:
        yield engines
    finally:
        _pool.put(engines)


# --- pixels -----------------------------------------------------------------


def to_display(frame: np.ndarray, *, bits_stored: int, photometric: str) -> np.ndarray:
    """Any decoded frame as 8-bit, bright meaning bright, for OCR.

    8-bit data are kept as they are. Deeper grey is stretched between the
    frame's own minimum and maximum, not the nominal range: burned-in text is
    drawn at the brightest value in use, which may be far below 2**bits - 1.
    MONOCHROME1 is inverted so text is bright as in every other image. Colour
    is expected as RGB (pydicom converts YBR); PALETTE COLOR needs its lookup
    table applied first (indices would be read as grey)."""
    array = np.asarray(frame)
    if bits_stored <= 8 and array.size and array.min() >= 0 and array.max() <= 255:
        out = array.astype(np.uint8, copy=False)
    else:
        values = array.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            out = np.zeros(array.shape, dtype=np.uint8)
        else:
            out = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if photometric.upper() == "MONOCHROME1":
        out = 255 - out
    return np.ascontiguousarray(out)


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Brightness (the brightest channel: white, yellow, cyan and grey text are
    all bright) and, for colour, chroma (coloured text on grey speckle)."""
    if image.dtype != np.uint8:
        raise ValueError(f"OCR reads 8-bit frames, not {image.dtype} (use to_display)")
    if image.ndim == 2:
        return image, None
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image[..., :3]
        value = rgb.max(axis=2)
        return value, value - rgb.min(axis=2)
    raise ValueError(f"a frame is (H, W) or (H, W, 3), not {image.shape}")


def _prepare(value: np.ndarray, chroma: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Bright text kept, busy background (speckle, bands) pushed down.

    On a dark background every grey level is kept (grey text on black reads
    well). Where most of the neighbourhood is lit, only what is brighter than
    BRIGHT survives, stretched so anti-aliased strokes are not cut, and
    coloured pixels (yellow, cyan text) survive by their chroma. Returns the
    prepared brightness and the busy mask."""
    lit = Image.fromarray(((value > BUSY_LIT) * 255).astype(np.uint8))
    busy = np.asarray(lit.filter(ImageFilter.BoxBlur(BUSY_RADIUS))) > BUSY_SHARE * 255
    stretched = np.clip((value.astype(np.int16) - BRIGHT) * (255 // (255 - BRIGHT)), 0, 255)
    if chroma is not None:
        stretched = np.maximum(stretched, chroma)
    return np.where(busy, stretched, value).astype(np.uint8), busy


def _scaled(value: np.ndarray, width: int, height: int) -> Image.Image:
    """Inverted (dark text on white, as Tesseract was trained) and resized."""
    image = Image.fromarray(255 - value)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


# --- reading ----------------------------------------------------------------


@dataclass
class _Line:
    words: list[Word]
    confidence: float
    box: tuple[int, int, int, int]  # left, top, right, bottom in input pixels


def _recognise(
    api: Any, image: Image.Image, scale_x: float, scale_y: float, dx: int, dy: int
) -> list[_Line]:
    """Lines and words Tesseract reads in ``image``, boxes mapped back to input."""
    import tesserocr

    api.SetImageBytes(image.tobytes(), image.width, image.height, 1, image.width)
    api.SetSourceResolution(300)
    api.Recognize()
    iterator = api.GetIterator()
    lines: list[_Line] = []
    if iterator is None:
        return lines
    level_line, level_word = tesserocr.RIL.TEXTLINE, tesserocr.RIL.WORD

    def box(left: int, top: int, right: int, bottom: int) -> tuple[int, int, int, int]:
        return (
            dx + int(left / scale_x),
            dy + int(top / scale_y),
            dx + int(np.ceil(right / scale_x)),
            dy + int(np.ceil(bottom / scale_y)),
        )

    current: _Line | None = None
    while True:
        if iterator.IsAtBeginningOf(level_line):
            bounds = iterator.BoundingBox(level_line)
            if bounds is not None:
                current = _Line([], iterator.Confidence(level_line), box(*bounds))
                lines.append(current)
        try:
            text = (iterator.GetUTF8Text(level_word) or "").strip()
        except RuntimeError:  # tesserocr's way of saying "no text here"
            text = ""
        bounds = iterator.BoundingBox(level_word)
        if text and bounds is not None and current is not None:
            left, top, right, bottom = box(*bounds)
            current.words.append(
                Word(text, left, top, right - left, bottom - top, iterator.Confidence(level_word))
            )
        if not iterator.Next(level_word):
            break
    return lines  # some without words: ink pass one could not read, re-read below


def _reread_models(line: _Line) -> tuple[str, ...]:
    """Which extra models a line needs, from what pass one made of it."""
    text = " ".join(word.text for word in line.words)
    models: tuple[str, ...] = ()
    if len(_CYRILLIC.findall(text)) >= 2:
        models += REREAD_CYRILLIC
    latin = len(_LATIN.findall(text))
    if latin >= 2 and len(_LOOKALIKE.findall(text)) == latin:
        models += REREAD_LOOKALIKE
    if line.confidence < SURE:
        models += REREAD_UNSURE
    return models


def _reread(
    engines: _Engines, value: np.ndarray, line: _Line, models: tuple[str, ...]
) -> list[_Line]:
    """The line cut out with a margin, scaled to LINE_HEIGHT, read as one line."""
    import tesserocr

    left, top, right, bottom = line.box
    margin = max(3, (bottom - top) // 3)
    x0, y0 = max(left - margin, 0), max(top - margin, 0)
    x1, y1 = min(right + margin, value.shape[1]), min(bottom + margin, value.shape[0])
    crop = value[y0:y1, x0:x1]
    if crop.size == 0:
        return []
    scale = LINE_HEIGHT / crop.shape[0]
    width = max(1, round(crop.shape[1] * scale))
    image = _scaled(crop, width, LINE_HEIGHT)
    found: list[_Line] = []
    for model in models:
        api = engines.api(model, tesserocr.PSM.SINGLE_LINE)
        found += _recognise(api, image, width / crop.shape[1], scale, x0, y0)
    return found


def _calm(value: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of black pixels in a ring around a line: banners and corner text
    sit on black, speckle noise read as a "line" does not; the former come
    first when re-reads are capped."""
    left, top, right, bottom = box
    margin = max(3, (bottom - top) // 2)
    y0, x0 = max(top - margin, 0), max(left - margin, 0)
    outer = value[y0 : bottom + margin, x0 : right + margin]
    inner = value[max(top, 0) : bottom, max(left, 0) : right]
    ring = outer.size - inner.size
    if ring <= 0:
        return 0.0
    return float(((outer <= DARK).sum() - (inner <= DARK).sum()) / ring)


def _ink_clusters(value: np.ndarray, busy: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes of ink clusters on a black background, for what Tesseract's page
    layout passes over (two small Chinese characters beside the sector's
    apex). Ink is grouped on a grid of CELL pixels, glyphs up to two cells
    apart joined; only clusters of a text's size with black all round count."""
    ink = (value > INK) & ~busy
    rows, columns = ink.shape
    grid_rows, grid_columns = -(-rows // CELL), -(-columns // CELL)
    padded = np.zeros((grid_rows * CELL, grid_columns * CELL), dtype=bool)
    padded[:rows, :columns] = ink
    # asarray: numpy types a reduction over axes as "scalar or array".
    cells = np.asarray(padded.reshape(grid_rows, CELL, grid_columns, CELL).any(axis=(1, 3)))
    joined = cells.copy()
    for shift in (1, 2):
        joined[:, shift:] |= cells[:, :-shift]
        joined[:, :-shift] |= cells[:, shift:]
    seen = np.zeros_like(joined)
    boxes = []
    for y, x in zip(*np.nonzero(joined), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        stack, top, left, bottom, right = [(y, x)], y, x, y, x
        while stack:
            cy, cx = stack.pop()
            top, bottom, left, right = min(top, cy), max(bottom, cy), min(left, cx), max(right, cx)
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if (
                    0 <= ny < grid_rows
                    and 0 <= nx < grid_columns
                    and joined[ny, nx]
                    and not seen[ny, nx]
                ):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        box = (
            left * CELL,
            top * CELL,
            min((right + 1) * CELL, columns),
            min((bottom + 1) * CELL, rows),
        )
        height = box[3] - box[1]
        if MIN_LINE_HEIGHT <= height <= MAX_CLUSTER_HEIGHT and box[2] - box[0] >= 2 * CELL:
            boxes.append(box)
    return [box for box in boxes if _calm(value, box) >= CALM_CLUSTER]


def _unread(value: np.ndarray, box: tuple[int, int, int, int], read: np.ndarray) -> bool:
    """Most of the ink in ``box`` lies outside every line read with words."""
    left, top, right, bottom = box
    ink = value[top:bottom, left:right] > INK
    total = int(ink.sum())
    return total > 0 and int((ink & ~read[top:bottom, left:right]).sum()) > UNREAD_SHARE * total


def _read_cluster(
    engines: _Engines, value: np.ndarray, box: tuple[int, int, int, int]
) -> list[_Line]:
    """An ink cluster pass one did not read: as a block, enlarged to line size."""
    import tesserocr

    left, top, right, bottom = box
    x0, y0 = max(left - CELL, 0), max(top - CELL, 0)
    x1, y1 = min(right + CELL, value.shape[1]), min(bottom + CELL, value.shape[0])
    crop = value[y0:y1, x0:x1]
    scale = min(max(LINE_HEIGHT / crop.shape[0], SCALE), 2 * SCALE)
    image = _scaled(crop, round(crop.shape[1] * scale), round(crop.shape[0] * scale))
    found: list[_Line] = []
    for model in REREAD_UNSURE:
        api = engines.api(model, tesserocr.PSM.SINGLE_BLOCK)
        found += _recognise(
            api, image, image.width / crop.shape[1], image.height / crop.shape[0], x0, y0
        )
    for line in list(found):
        text = " ".join(word.text for word in line.words)
        if len(_CYRILLIC.findall(text)) >= 2:
            found += _reread(engines, value, line, REREAD_CYRILLIC)
    return found


def _bright_ink(value: np.ndarray) -> np.ndarray | None:
    """The brightest pixels alone, as ink on black, when they are few and
    stand well above what surrounds them (else None: nothing to add)."""
    top = int(value.max()) if value.size else 0
    if top < BRIGHT:
        return None
    ink = value >= top - INK_MARGIN
    share = float(ink.mean())
    if not 0 < share <= INK_SHARE or float(np.median(value[~ink])) > top - 2 * INK_MARGIN:
        return None
    return (ink * 255).astype(np.uint8)


def _coloured(chroma: np.ndarray | None, busy: np.ndarray) -> np.ndarray | None:
    """Yellow or cyan text over bright speckle, separated by what tissue
    never is: coloured. None when there is too little colour to be text."""
    if chroma is None:
        return None
    coloured = np.where(busy, chroma, 0).astype(np.uint8)
    return coloured if (coloured > BRIGHT).sum() >= COLOURED_PIXELS else None


def _read_lines(image: np.ndarray) -> list[_Line]:
    """Pass one over the frame (and its coloured layer), re-reads of the lines
    that need them, then the ink clusters on black that no line covers."""
    import tesserocr

    value, chroma = _channels(np.asarray(image))
    prepared, busy = _prepare(value, chroma)
    height, width = value.shape
    with _engines() as engines:
        api = engines.api(PASS_ONE, tesserocr.PSM.SPARSE_TEXT)
        page = _scaled(prepared, width * SCALE, height * SCALE)
        lines = _recognise(api, page, SCALE, SCALE, 0, 0)
        sources = [prepared] * len(lines)
        ink = _bright_ink(value)
        if ink is not None:
            # Text is the brightest thing in the frame; Tesseract's own
            # threshold can put it with a filled box behind it (white on a
            # dark red band read as one blot), a fixed one cannot.
            more = _recognise(api, _scaled(ink, width * SCALE, height * SCALE), SCALE, SCALE, 0, 0)
            lines += more
            sources += [ink] * len(more)
        coloured = _coloured(chroma, busy)
        if coloured is not None:
            more = _recognise(
                api, _scaled(coloured, width * SCALE, height * SCALE), SCALE, SCALE, 0, 0
            )
            lines += more
            sources += [coloured] * len(more)
        wanted = [
            (line, source, models)
            for line, source in zip(lines, sources, strict=True)
            if (models := _reread_models(line)) and line.box[3] - line.box[1] >= MIN_LINE_HEIGHT
        ]
        wanted.sort(key=lambda item: -_calm(value, item[0].box))
        extra: list[_Line] = []
        for line, source, models in wanted[:MAX_REREAD_LINES]:
            extra += _reread(engines, source, line, models)
        read = np.zeros(value.shape, dtype=bool)
        for line in lines + extra:
            if line.words:
                left, top, right, bottom = line.box
                read[max(top, 0) : bottom, max(left, 0) : right] = True
        clusters = [box for box in _ink_clusters(value, busy) if _unread(value, box, read)]
        for box in clusters[:MAX_CLUSTERS]:
            extra += _read_cluster(engines, prepared, box)
    return [line for line in lines + extra if line.words]


def read_words(image: np.ndarray) -> list[Word]:
    """Every word read in one 8-bit frame ((H, W) grey or (H, W, 3) RGB).

    Boxes are in the input's pixels. A line re-read by another model adds its
    words as well, so the same ink can appear under more than one reading."""
    return [word for line in _read_lines(image) for word in line.words]


# --- verification -----------------------------------------------------------


def sample_frames(count: int, *, most: int) -> list[int]:
    """First, last and an even stride between: at most ``most`` indices, sorted."""
    if count <= 0 or most <= 0:
        return []
    if most == 1:
        return [0]
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def _reading_order(indices: list[int]) -> list[int]:
    """First, last, then whichever is farthest from those already read, so a
    budget that runs out leaves the clip evenly covered, not its start."""
    if len(indices) <= 2:
        return indices
    order = [indices[0], indices[-1]]
    rest = indices[1:-1]
    while rest:
        best = max(rest, key=lambda i: min(abs(i - j) for j in order))
        order.append(best)
        rest.remove(best)
    return order


def _alphanumerics(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def _in_blanked(word: Word, blanked: np.ndarray, lit: np.ndarray) -> bool:
    """The word's box, less one pixel each side (resampling can spill a box
    onto the edge of a blanked band), has ink inside the blanked mask: a box
    that merely reaches over blanked black (noise read at an edge) is not
    text the blanking missed."""
    top, bottom = word.top + 1, word.top + word.height - 1
    left, right = word.left + 1, word.left + word.width - 1
    top, left = max(top, 0), max(left, 0)
    if bottom <= top or right <= left:
        return False
    inside = blanked[top:bottom, left:right]
    return bool(inside.any() and lit[top:bottom, left:right][inside].any())


def _kinds(found: list[str]) -> list[str]:
    """Kinds as short labels only, so no text read can reach a log line."""
    return sorted({kind if _KIND.fullmatch(kind) else "identity" for kind in found})


def _frame_reason(
    lines: list[_Line],
    lit: np.ndarray,
    blanked: np.ndarray | None,
    is_identity: Callable[[str], list[str]],
) -> tuple[list[str], bool]:
    """Identity kinds found (words, lines, the whole frame) and text in blanked."""
    found: list[str] = []
    texts: list[str] = []
    for line in lines:
        for word in line.words:
            found += is_identity(word.text)
        line_text = " ".join(word.text for word in line.words)
        texts.append(line_text)
        found += is_identity(line_text)
    found += is_identity(" ".join(texts))
    in_blanked = blanked is not None and any(
        word.confidence >= MIN_CONFIDENCE
        and _alphanumerics(word.text) >= 2
        and _in_blanked(word, blanked, lit)
        for line in lines
        for word in line.words
    )
    return _kinds(found), in_blanked


def verify(
    frames: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    count: int,
    *,
    blanked: np.ndarray | None,
    is_identity: Callable[[str], list[str]],
    most_frames: int,
    budget_seconds: float,
) -> Verdict:
    """OCR a sample of cleaned 8-bit frames; say whether identity text or any
    text inside the blanked areas is left.

    ``frames`` is a sequence or ``frames(i)`` (decode lazily; apply
    ``to_display`` there). The first frame is always read, then the last and
    an even stride between, until ``most_frames`` are read or the time budget
    is spent; reading stops at the first finding. Frame numbers in the reason
    count from 1, as DICOM does.

    ``most_frames`` and ``budget_seconds`` are the node's ``ocr_frames`` and
    ``ocr_budget_seconds`` (their defaults, and why, are in the
    configuration): a real 600x800 echo frame takes 0.2-0.5 s on one core
    (a busy synthetic one up to ~1 s) and burned-in text is the same on
    every frame of a clip, so a few frames (first, last, middle: an
    annotation added part way through) keep a C-STORE from waiting long
    while the first frame, where nearly all banners are, is always read. Raises
    OcrUnavailable when Tesseract is missing: nothing read must never pass
    for nothing found."""
    start = time.monotonic()
    if blanked is not None:
        blanked = np.asarray(blanked, dtype=bool)
    get = frames if callable(frames) else frames.__getitem__
    read = 0
    for index in _reading_order(sample_frames(count, most=most_frames)):
        if read and time.monotonic() - start >= budget_seconds:
            break
        image = np.asarray(get(index))
        if blanked is not None and blanked.shape != image.shape[:2]:
            raise ValueError(f"blanked mask {blanked.shape} does not fit frame {image.shape}")
        lit = _channels(image)[0] > DARK
        kinds, in_blanked = _frame_reason(_read_lines(image), lit, blanked, is_identity)
        read += 1
        reason = None
        if kinds:
            reason = f"OCR found identity text ({', '.join(kinds)}) in frame {index + 1}"
            if in_blanked:
                reason += ", and text inside an area the node blanked"
        elif in_blanked:
            reason = f"OCR found text inside an area the node blanked (frame {index + 1})"
        if reason:
            return Verdict(reason, read, time.monotonic() - start)
    return Verdict(None, read, time.monotonic() - start)
