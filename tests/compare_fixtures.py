"""Runs of one child's two studies for the comparison tests: angio runs at
their own frame rates carrying ECGs of their own heart rates, and a run
without an ECG."""

from __future__ import annotations

from typing import Any

from dicomnode.ops.ecgwave import synthetic_ecg, with_ecg
from dicomnode.ops.samples import PATIENTS, SyntheticPatient, xa_instance


def run(
    study: str,
    date: str,
    *,
    fps: float,
    frames: int,
    rate: float | None,
    seed: int,
    patient: SyntheticPatient = PATIENTS[1],
) -> tuple[Any, list[float]]:
    """An angio run of ``study`` on ``date``, with a lead II of ``rate``
    beats a minute (none when None): (the dataset, its true R times in s)."""
    ds = xa_instance(patient, frames=frames, rows=48, cols=48, study_uid=study, seed=seed)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.FrameTime = 1000 / fps
    if rate is None:
        return ds, []
    lead, truth = synthetic_ecg(rate, 500, frames / fps, seed=seed)
    return with_ecg(ds, {"II": lead}, 500, 0.0), truth
