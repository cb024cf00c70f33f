"""The ECG an echo or angio instance carries, and its R-waves.

Machines that record the ECG with the cine put it in the instance's
Waveform Sequence (PS3.3 C.10.9): multiplex groups of channels, each
channel coded by its source (lead I, II, ...), sampled at a stated
frequency, starting at the group's time offset from the first frame
(Multiplex Group Time Offset, ms). The viewer draws one lead under the
cine, with a cursor at the frame shown, so a frame can be placed in the
cardiac cycle; the R-waves mark each beat.

The lead is lead II when the group has it (the rhythm lead), else the
first channel. R-waves are found as Pan and Tompkins do (IEEE Trans
Biomed Eng 1985;32(3):230-236), reduced to what a clean monitoring lead
needs: the slope squared, integrated over 80 ms, peaks above a third of
a typical beat's (a low quantile of each 1.5 s's strongest, so a few
artefacts do not silence the rest), at least 160 ms apart (375/min, faster than an
infant's SVT); each R-wave is then placed at the largest deflection
(of the QRS's own polarity) within 120 ms before that peak, with 50 and
60 Hz mains hum filtered out (zero phase), between samples by a parabola
fitted to the 8 ms either side of it. No waveform, or one without an ECG
channel, is no ECG: nothing is drawn rather than a trace of something else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

LEAD_II = {("SCPECG", "5.6.3-9-2"), ("MDC", "2:2")}
LEAD_I = {("SCPECG", "5.6.3-9-1"), ("MDC", "2:1")}
MOST_SAMPLES = 10_000_000  # per channel: hours of ECG, far more than any clip
MOST_OFFSET_MS = 3_600_000.0  # an hour between the ECG's start and the first frame
MOST_POINTS = 4000  # what the browser draws: min and max per bucket keep the QRS
INTEGRATE_S = 0.08
REFRACTORY_S = 0.16  # 375/min: an infant's SVT is up to 300
WINDOW_S = 1.5
TYPICAL_PERCENTILE = 30
SEARCH_BACK_S = 0.12
PEAK_FIT_S = 0.008  # either side of the R peak's sample: its tip, not the Q or S


class NoEcg(ValueError):
    """The instance carries no ECG the viewer can draw: the reason."""


@dataclass
class Ecg:
    hz: float
    offset_s: float  # the first sample's time after the first frame
    samples: np.ndarray  # the lead, in its units (mV as the sender scales it)
    lead: str
    r_waves: list[float] = field(default_factory=list)  # seconds after the first frame

    def rate(self) -> float | None:
        """The median heart rate over the R-R intervals, per minute."""
        if len(self.r_waves) < 2:
            return None
        return round(60 / float(np.median(np.diff(self.r_waves))), 1)

    def as_json(self) -> dict[str, Any]:
        """What the viewer draws: at most `MOST_POINTS` points (time in s,
        value scaled to -1..1), the R-waves and the rate."""
        values = self.samples
        span = float(np.max(np.abs(values - np.median(values)))) or 1.0
        scaled = (values - np.median(values)) / span
        times = self.offset_s + np.arange(len(values)) / self.hz
        if len(values) > MOST_POINTS:
            buckets = math.ceil(len(values) / (MOST_POINTS // 2))
            points: list[list[float]] = []
            for start in range(0, len(values), buckets):
                chunk = scaled[start : start + buckets]
                low, high = int(np.argmin(chunk)), int(np.argmax(chunk))
                for i in sorted({low, high}):
                    points.append([float(times[start + i]), float(chunk[i])])
        else:
            points = [[float(t), float(v)] for t, v in zip(times, scaled, strict=True)]
        return {
            "hz": self.hz,
            "lead": self.lead,
            "offset_s": self.offset_s,
            "duration_s": len(values) / self.hz,
            "points": [[round(t, 4), round(v, 4)] for t, v in points],
            "r_waves": [round(t, 4) for t in self.r_waves],
            "rate": self.rate(),
        }


def _source(channel: Dataset) -> tuple[str, str]:
    sources = channel.get("ChannelSourceSequence") or []
    if not sources:
        return "", ""
    code = sources[0]
    return str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeValue", ""))


def _label(code: tuple[str, str]) -> str:
    """The lead's name from its code: the meaning may have been rewritten
    (de-identification replaces free-text code meanings)."""
    return "Lead II" if code in LEAD_II else "Lead I" if code in LEAD_I else "ECG"


def _is_lead(code: tuple[str, str]) -> bool:
    """An ECG lead's channel source: SCP-ECG's lead codes (5.6.3-9-n), or
    MDC's (2:n, n below 256: MDC_ECG_LEAD_*; the partition's higher codes
    are other signals, a pressure among them)."""
    scheme, value = code
    if scheme == "SCPECG":
        return value.startswith("5.6.3-9-")
    if scheme == "MDC":
        partition, _, number = value.partition(":")
        return partition == "2" and number.isdigit() and int(number) < 256
    return False


def _choose(groups: list[Dataset]) -> tuple[int, int, tuple[str, str]] | None:
    """(group, channel, code) of lead II in any multiplex group, else of the
    first ECG lead; None without one."""
    first = None
    for index, group in enumerate(groups):
        channels = group.get("ChannelDefinitionSequence") or []
        for n, channel in enumerate(channels):
            code = _source(channel)
            if code in LEAD_II:
                return index, n, code
            if first is None and _is_lead(code):
                first = (index, n, code)
    return first


def read(ds: Dataset) -> Ecg:
    """The ECG lead of ``ds``'s Waveform Sequence, with its R-waves; NoEcg
    with the reason when there is none to draw."""
    groups = list(ds.get("WaveformSequence") or [])
    found = _choose(groups)
    if found is not None:
        index, chosen, code = found
        group = groups[index]
        try:
            hz = float(group.SamplingFrequency)
            count = int(group.NumberOfWaveformSamples)
            offset_ms = float(group.get("MultiplexGroupTimeOffset") or 0.0)
        except (AttributeError, TypeError, ValueError):
            raise NoEcg("the ECG does not say its sampling") from None
        if not (math.isfinite(hz) and 1 <= hz <= 100_000) or not 0 < count <= MOST_SAMPLES:
            raise NoEcg("the ECG does not say its sampling")
        if not (math.isfinite(offset_ms) and abs(offset_ms) <= MOST_OFFSET_MS):
            raise NoEcg("the ECG does not say its sampling")
        try:
            samples = np.asarray(ds.waveform_array(index)[:, chosen], dtype=np.float64)
        except Exception:  # damaged data: any of pydicom's errors
            raise NoEcg("the ECG's samples cannot be read") from None
        if len(samples) != count or not np.all(np.isfinite(samples)):
            raise NoEcg("the ECG's samples cannot be read")
        ecg = Ecg(hz, offset_ms / 1000, samples, _label(code))
        ecg.r_waves = [ecg.offset_s + i / hz for i in r_waves(samples, hz)]
        return ecg
    raise NoEcg("this instance carries no ECG")


def _without_mains(x: np.ndarray, hz: float) -> np.ndarray:
    """``x`` with 50 and 60 Hz and their harmonics taken out (a quarter hertz wide),
    by a zero-phase filter: no peak moves, the QRS is not smeared."""
    spectrum = np.fft.rfft(x)
    frequencies = np.fft.rfftfreq(len(x), 1 / hz)
    for mains in (50.0, 60.0):
        harmonic = np.round(frequencies / mains)
        spectrum[(harmonic >= 1) & (np.abs(frequencies - harmonic * mains) < 0.25)] = 0
    return np.fft.irfft(spectrum, len(x))


def r_waves(samples: np.ndarray, hz: float) -> list[float]:
    """Each R-wave's position in samples (fractional: the peak of a parabola
    through the three samples around it)."""
    if len(samples) < hz * 0.5:
        return []
    x = samples - np.median(samples)
    slope = np.gradient(x) * hz
    width = max(1, round(INTEGRATE_S * hz))
    energy = np.convolve(slope**2, np.ones(width) / width, mode="same")
    # A typical beat's strength: a low quantile of the strongest moment of
    # each 1.5 s (a beat at 40/min or faster in each): artefacts ten times a
    # beat in up to two windows of three (a pop reaches into two) move it
    # no more than the beats do.
    window = round(WINDOW_S * hz)
    maxima = [float(energy[i : i + window].max()) for i in range(0, len(energy), window)]
    if len(maxima) >= 3:
        strongest = float(np.percentile(maxima, TYPICAL_PERCENTILE))
    else:
        strongest = float(np.percentile(energy, 99.5))
    if strongest <= 0:
        return []
    threshold = strongest / 3
    refractory = round(REFRACTORY_S * hz)
    back = round(SEARCH_BACK_S * hz)
    # The QRS's polarity: the larger of the lead's upward and downward extremes.
    sign = 1.0 if np.percentile(x, 99.5) >= -np.percentile(x, 0.5) else -1.0
    clean = _without_mains(x, hz)  # hum tilts a peak by its slope
    fit = max(1, round(PEAK_FIT_S * hz))
    found: list[int] = []
    above = energy > threshold
    start = None
    for i, on in enumerate([*above, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            peak = start + int(np.argmax(energy[start:i]))
            low, high = max(0, peak - back), min(len(x), peak + width)
            r = low + int(np.argmax(sign * clean[low:high]))
            if not found or r - found[-1] >= refractory:
                found.append(r)
            elif sign * clean[r] > sign * clean[found[-1]]:
                found[-1] = r  # the same beat, a taller peak
            start = None
    return [_vertex(clean, r, fit) for r in found]


def _vertex(x: np.ndarray, i: int, half: int) -> float:
    """The peak of the parabola fitted (least squares) to the samples within
    ``half`` of sample ``i``: noise averages out, and the peak may lie
    between samples."""
    low, high = max(0, i - half), min(len(x), i + half + 1)
    if high - low < 3:
        return float(i)
    offsets = np.arange(low, high) - i
    a, b, _ = np.polyfit(offsets, x[low:high], 2)
    if a == 0 or not abs(b / (2 * a)) <= half:
        return float(i)
    return float(i - b / (2 * a))
