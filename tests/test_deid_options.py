"""De-identification options as enums, resolved once per sender (`deid.options`).

The pipeline and the walker are given a `DeidPolicy`, never option names or
the configuration: what one hospital's options say cannot leak into another's
data, and a combination the node cannot honour is refused when it is made.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomnode.config import deid_setup, validate
from dicomnode.deid.header import DeidSettings, HeaderDeidentifier
from dicomnode.deid.options import DEFAULT_OPTIONS, DeidPolicy, SenderPolicies
from dicomnode.deid.pipeline import Deidentifier
from dicomnode.deid.profile import Option
from dicomnode.deid.secret import Secret
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from storage.archive import Archive
from tests.conftest import encode, make_config

ROOT = Path(__file__).resolve().parent.parent
FULL_DATES = frozenset(
    {Option.RETAIN_FULL_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}
)


@pytest.mark.parametrize(
    "options",
    [
        {Option.RETAIN_UIDS},
        {Option.CLEAN_PIXEL_DATA},  # its code says "pixels verified clean": never by setting
        {Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES},
    ],
)
def test_a_policy_the_node_cannot_honour_is_refused_when_made(options: set[Option]) -> None:
    with pytest.raises(ValueError):
        DeidPolicy(options=frozenset(options))
    with pytest.raises(ValueError):
        DeidSettings(options=frozenset(options))


def test_a_configuration_built_in_code_is_checked_too(tmp_path: Path) -> None:
    config = make_config(tmp_path, deid_options=frozenset({Option.CLEAN_PIXEL_DATA}))
    with pytest.raises(ValueError, match="CLEAN_PIXEL_DATA"):
        validate(config)


def test_safe_private_attributes_are_kept_only_under_their_option() -> None:
    allow = frozenset({(0x0009, "ACME ECHO 1.0", 0x03)})
    assert DeidPolicy(safe_private=allow).kept_private == frozenset()
    chosen = DEFAULT_OPTIONS | {Option.RETAIN_SAFE_PRIVATE}
    assert DeidPolicy(options=chosen, safe_private=allow).kept_private == allow


def test_the_answers_follow_the_options() -> None:
    default = DeidPolicy()
    assert default.shifts_dates and not default.keeps_full_dates
    assert default.keeps_characteristics and default.cleans_descriptors
    assert not (default.keeps_timezone or default.keeps_ages_over_89)
    full = DeidPolicy(options=FULL_DATES)
    assert full.keeps_full_dates and not full.shifts_dates
    bare = DeidPolicy(options=frozenset())
    assert not (bare.shifts_dates or bare.keeps_characteristics or bare.cleans_descriptors)


def test_an_unknown_or_blank_sender_gets_the_nodes_policy() -> None:
    own = DeidPolicy(options=FULL_DATES, blank_rectangles=((0, 0, 9, 9),))
    policies = SenderPolicies(DeidPolicy(), (("OSH_ECHO", own),))
    assert policies.of(" OSH_ECHO ") is own
    for stranger in (None, "", "osh_echo", "OSH_ECHO\x00", "OSH"):
        assert policies.of(stranger) == DeidPolicy()


def test_each_sender_gets_its_own_options_through_the_pipeline(
    tmp_path: Path, archive: Archive
) -> None:
    """Two hospitals, one asks for full dates: only its instance keeps them."""
    config = make_config(tmp_path)
    remotes = tuple(
        dataclasses.replace(r, deid_options=FULL_DATES) if r.ae_title == "DUSHANBE_ECHO" else r
        for r in config.remote_aes
    )
    setup = deid_setup(validate(dataclasses.replace(config, remote_aes=remotes, ocr=False)))
    deidentify = Deidentifier(setup, archive.index)  # a setup, no Config
    dates = {}
    for calling_ae, patient in (("DUSHANBE_ECHO", PATIENTS[0]), ("BISHKEK_ECHO", PATIENTS[1])):
        ds = small_instance(
            patient,
            study_uid=generate_uid(UID_ROOT),
            series_uid=generate_uid(UID_ROOT),
            instance_number=1,
        )
        sent = str(ds.StudyDate)
        data, syntax = encode(ds)
        out = deidentify(
            data,
            syntax,
            issuer=calling_ae,
            patient_key=patient.patient_id,
            calling_ae=calling_ae,
        ).dataset
        dates[calling_ae] = (sent, str(out.StudyDate), out.LongitudinalTemporalInformationModified)
    sent, kept, mark = dates["DUSHANBE_ECHO"]
    assert (kept, mark) == (sent, "UNMODIFIED")
    sent, shifted, mark = dates["BISHKEK_ECHO"]
    assert shifted != sent and mark == "MODIFIED"


def test_the_walker_takes_the_policy() -> None:
    policy = DeidPolicy(options=FULL_DATES)
    assert HeaderDeidentifier(Secret(bytes(32)), policy).settings is policy
    assert DeidSettings is DeidPolicy  # one notion, whatever the caller calls it


def test_deid_never_imports_the_configuration() -> None:
    """Layering: config may import deid's enums, deid never config."""
    offenders = []
    for path in sorted((ROOT / "dicomnode" / "deid").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "dicomnode.config" or n.startswith("dicomnode.config.") for n in names):
                offenders.append(path.name)
    assert offenders == []
