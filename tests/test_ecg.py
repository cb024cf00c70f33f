"""The ECG under the cine: R-waves of known times found within one
sample, on either polarity, at children's rates, through hum, noise and
breathing; a real 12-lead recording read as a cardiologist would (lead II,
a plausible rate, every lead agreeing); an echo or angio instance carrying
one keeps it through de-identification and storage, and the API gives it;
damaged or missing waveforms are no ECG, said why, never a 500."""

from __future__ import annotations

from copy import deepcopy
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from pydicom import Dataset, dcmread

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.ecgwave import synthetic_ecg, with_ecg
from dicomnode.ops.samples import PATIENTS, sample_file, xa_instance
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import cardiologist
from viewer import ecg


@pytest.mark.parametrize("hz", [250, 500, 1000])
@pytest.mark.parametrize("rate", [60, 120, 180, 220])
@pytest.mark.parametrize("inverted", [False, True], ids=["upright", "inverted"])
def test_r_waves_within_one_sample(hz: int, rate: int, inverted: bool) -> None:
    for seed in range(3):
        samples, truth = synthetic_ecg(rate, hz, 8, seed=seed, inverted=inverted)
        found = [i / hz for i in ecg.r_waves(samples, hz)]
        assert len(found) == len(truth), (seed, found, truth)
        assert max(abs(a - b) for a, b in zip(found, truth, strict=True)) * hz <= 1.0


@pytest.mark.parametrize(
    "samples",
    [np.zeros(5000), np.full(5000, 3.0), np.zeros(10)],
    ids=["flat", "constant", "too short"],
)
def test_no_r_waves_in_a_flat_or_short_trace(samples: np.ndarray) -> None:
    assert ecg.r_waves(samples, 500) == []


def test_a_real_twelve_lead_recording() -> None:
    """pydicom's 12-lead ECG (10 s at 1 kHz): lead II is drawn, its rate is
    a heart's, and lead I's R-waves fall within 20 ms of lead II's."""
    ds = dcmread(sample_file("waveform_ecg.dcm"))
    found = ecg.read(ds)
    assert found.lead == "Lead II" and found.hz == 1000
    rate = found.rate()
    assert rate is not None and 40 <= rate <= 150
    assert len(found.r_waves) == pytest.approx(rate / 6, abs=2)  # ten seconds of beats
    lead_i = [i / 1000 for i in ecg.r_waves(ds.waveform_array(0)[:, 0], 1000)]
    for r in found.r_waves[1:-1]:
        assert min(abs(r - other) for other in lead_i) <= 0.02


def carrying(rate: float = 120, offset_ms: float = 0.0) -> tuple[Any, list[float]]:
    """An angio run of 30 frames at 15/s with a 500 Hz lead I and II."""
    ds = xa_instance(PATIENTS[1], frames=30, rows=64, cols=64, seed=2)
    ds.FrameTime = 1000 / 15
    lead_ii, truth = synthetic_ecg(rate, 500, 2.0, seed=5)
    lead_i, _ = synthetic_ecg(rate, 500, 2.0, seed=5)
    return with_ecg(ds, {"I": lead_i * 0.5, "II": lead_ii}, 500, offset_ms), truth


def test_an_instance_keeps_its_ecg_through_storage_and_the_api_gives_it(
    config: Config, archive: Archive, ingestor: Ingestor
) -> None:
    ds, truth = carrying(offset_ms=-40.0)  # recording began 40 ms before the first frame
    stored = ingestor.ingest(incoming(ds))
    assert stored.status == 0, stored
    uid = str(stored.dataset.SOPInstanceUID)
    client: FlaskClient = cardiologist(config, archive)
    assert client.get(f"/api/instances/{uid}/meta").json["ecg"] is True
    answer = client.get(f"/api/instances/{uid}/ecg")
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["lead"] == "Lead II" and body["hz"] == 500 and body["offset_s"] == -0.04
    assert len(body["points"]) <= ecg.MOST_POINTS
    assert len(body["r_waves"]) == len(truth)
    for found, true in zip(body["r_waves"], truth, strict=True):
        assert abs(found - (true - 0.04)) <= 1 / 500  # in the frames' time
    assert body["rate"] == pytest.approx(120, rel=0.05)
    plain = ingestor.ingest(incoming(xa_instance(PATIENTS[1], frames=2, rows=32, cols=32)))
    none = client.get(f"/api/instances/{plain.dataset.SOPInstanceUID}/ecg")
    assert none.status_code == 404 and "carries no ECG" in none.json["message"]


def _damaged(how: str) -> Any:
    ds, _ = carrying()
    group = ds.WaveformSequence[0]
    if how == "no sampling":
        group.SamplingFrequency = 0
    elif how == "nan offset":
        group.MultiplexGroupTimeOffset = float("nan")
    elif how == "short data":
        group.WaveformData = group.WaveformData[:100]
    elif how == "more samples claimed":
        group.NumberOfWaveformSamples = 10**9
    elif how == "no source code":
        for channel in group.ChannelDefinitionSequence:
            del channel.ChannelSourceSequence
    elif how == "not ECG":
        for channel in group.ChannelDefinitionSequence:
            channel.ChannelSourceSequence[0].CodingSchemeDesignator = "DCM"
    return ds


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("no sampling", "sampling"),
        ("nan offset", "sampling"),
        ("short data", "cannot be read"),
        ("more samples claimed", "sampling"),
        ("no source code", "carries no ECG"),
        ("not ECG", "carries no ECG"),
    ],
)
def test_a_damaged_or_foreign_waveform_is_no_ecg_saying_why(how: str, why: str) -> None:
    with pytest.raises(ecg.NoEcg, match=why):
        ecg.read(deepcopy(_damaged(how)))


def test_a_name_in_a_waveform_annotation_does_not_reach_disk(
    ingestor: Ingestor, archive: Archive
) -> None:
    """Machines annotate waveforms with free text; a careless one writes
    the child's name there."""
    ds, _ = carrying()
    note = Dataset()
    note.UnformattedTextValue = f"{PATIENTS[1].name.replace('^', ' ')} ECG 120/min"
    note.ReferencedWaveformChannels = [1, 1]
    ds.WaveformSequence[0].WaveformAnnotationSequence = [note]
    ds.WaveformSequence[0].MultiplexGroupLabel = PATIENTS[1].name.split("^")[0]
    stored = ingestor.ingest(incoming(ds))
    assert stored.status == 0, stored
    data = archive.read(str(stored.dataset.SOPInstanceUID))
    for part in PATIENTS[1].name.split("^"):
        assert part.encode("utf-8") not in data
    assert ecg.read(dcmread(BytesIO(data))).rate() == pytest.approx(120, rel=0.05)


def test_one_artefact_does_not_silence_the_other_beats() -> None:
    """Electrode pops six times a beat's height, at 2 and 6 s: every beat
    more than 200 ms from them is still found within a sample (the one
    beside a pop may be taken for it, or it for a beat)."""
    samples, truth = synthetic_ecg(100, 500, 8, seed=4)
    samples[1000:1006] += 6.0
    samples[3000:3006] += 6.0
    found = [i / 500 for i in ecg.r_waves(samples, 500)]
    away = [r for r in truth if min(abs(r - 2.0), abs(r - 6.0)) > 0.2]
    assert len(away) >= len(truth) - 2
    for r in away:
        assert min(abs(r - f) for f in found) <= 1 / 500


def test_an_infants_svt_at_three_hundred() -> None:
    samples, truth = synthetic_ecg(300, 500, 6, seed=6)
    assert len(ecg.r_waves(samples, 500)) == len(truth)


def test_lead_ii_is_found_in_another_group_and_a_pressure_is_no_lead() -> None:
    ds, _ = carrying()
    pressure = deepcopy(ds.WaveformSequence[0])
    for channel in pressure.ChannelDefinitionSequence:
        channel.ChannelSourceSequence[0].CodingSchemeDesignator = "MDC"
        channel.ChannelSourceSequence[0].CodeValue = "2:15104"  # not an ECG lead
    lead_ii = deepcopy(ds.WaveformSequence[0])
    ds.WaveformSequence = [pressure, lead_ii]
    found = ecg.read(ds)
    assert found.lead == "Lead II"
    ds.WaveformSequence = [pressure]
    with pytest.raises(ecg.NoEcg, match="carries no ECG"):
        ecg.read(ds)
