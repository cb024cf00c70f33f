"""Synthetic ECGs of known R-wave times, and instances that carry them:
the demo's angio runs (`worked`) and the ECG tests.

A beat is the sum of Gaussian P, Q, R, S and T waves at their usual
offsets from the R peak; the rate drifts by a few per cent beat to beat;
baseline wander, mains hum and noise are added. An R-wave's true time is
where the beat's noise-free sum peaks (near the R wave's centre, moved a
little by its neighbours), which need not be a sample.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

# (offset from R in s, amplitude in mV, width in s)
WAVES = [
    (-0.16, 0.15, 0.025),
    (-0.025, -0.1, 0.008),
    (0.0, 1.0, 0.009),
    (0.025, -0.25, 0.009),
    (0.25, 0.3, 0.045),
]
LEADS = {"I": "5.6.3-9-1", "II": "5.6.3-9-2"}


def synthetic_ecg(
    rate: float,
    hz: float,
    seconds: float,
    *,
    seed: int = 0,
    inverted: bool = False,
    noise_mv: float = 0.02,
    first_s: float = 0.3,
) -> tuple[np.ndarray, list[float]]:
    """(samples in mV, the true R times in s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * hz)) / hz
    beats: list[float] = []
    at = first_s + rng.uniform(0, 1 / hz)  # not on a sample
    while at < seconds - 0.3:
        beats.append(at)
        at += 60 / rate * rng.uniform(0.95, 1.05)
    x = np.zeros_like(t)
    for r in beats:
        for offset, amplitude, width in WAVES:
            x += amplitude * np.exp(-0.5 * ((t - r - offset) / width) ** 2)
    truth = [_peak(beats, r) for r in beats]
    x += 0.3 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))  # breathing
    x += 0.05 * np.sin(2 * np.pi * 50 * t)  # mains
    x += rng.normal(0, noise_mv, len(t))
    return (-x if inverted else x), truth


def _peak(beats: list[float], r: float) -> float:
    """The noise-free ECG's maximum within 10 ms of the R wave's centre, to 1 µs."""
    t = np.linspace(r - 0.01, r + 0.01, 20001)
    x = np.zeros_like(t)
    for beat in beats:
        if abs(beat - r) < 1.0:
            for offset, amplitude, width in WAVES:
                x += amplitude * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
    return float(t[np.argmax(x)])


def with_ecg(
    ds: Dataset, leads: dict[str, np.ndarray], hz: float, offset_ms: float = 0.0
) -> Dataset:
    """``ds`` carrying ``leads`` (name to mV) as one multiplex group of
    16-bit channels at 2.5 µV per unit, as an echo machine writes them."""
    group = Dataset()
    group.MultiplexGroupTimeOffset = offset_ms
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = len(next(iter(leads.values())))
    group.SamplingFrequency = hz
    group.MultiplexGroupLabel = "ECG"
    channels = []
    for name in leads:
        channel = Dataset()
        source = Dataset()
        source.CodeValue, source.CodingSchemeDesignator = LEADS[name], "SCPECG"
        source.CodeMeaning = f"Lead {name}"
        channel.ChannelSourceSequence = [source]
        channel.ChannelSensitivity = 2.5
        units = Dataset()
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSensitivityUnitsSequence = [units]
        channel.ChannelSensitivityCorrectionFactor = 1
        channel.ChannelBaseline = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    samples = np.stack([np.round(v * 1000 / 2.5) for v in leads.values()], axis=1)
    group.WaveformData = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    ds.WaveformSequence = [group]
    return ds
