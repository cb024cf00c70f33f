"""What the type checker (mypy, [tool.mypy]) showed in de-identification,
export and the command line: a value that can be None where the code
assumed it could not, and names that held two kinds of thing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from sqlalchemy import delete

from dicomnode.cli.main import main
from dicomnode.config import Config
from dicomnode.ingest.pipeline import Outcome
from dicomnode.jobs.export import GONE, Cohort, ExportBlocked, export
from dicomnode.ops.samples import xa_instance
from storage.archive import Archive
from storage.schema import instances
from tests.test_export import cohort_archive  # noqa: F401 (a fixture)
from tests.test_spool import Side, assert_same, both_ways, encode, pair  # noqa: F401 (a fixture)

PASSWORD = "correct horse battery staple"


def _forget_the_rest(archive: Archive) -> object:
    """An ``on_instance`` that removes every index row once the first
    instance is packed: the rest were listed, and are gone when their turn
    comes (an operator's repair of the index while a queued export ran)."""

    def step(done: int, total: int) -> None:
        if done == 1:
            with archive.index.engine.begin() as conn:
                conn.execute(delete(instances))

    return step


def test_an_instance_gone_while_exporting_is_left_out_by_name(
    config: Config,
    cohort_archive: Archive,  # noqa: F811
    tmp_path: Path,
) -> None:
    """It used to reach the blob store as key None: a TypeError lost the
    whole export. Now it is left out, like any instance that cannot go."""
    out = tmp_path / "cohort.zip"
    result = export(
        config,
        cohort_archive,
        Cohort(),
        out,
        progress=False,
        on_instance=_forget_the_rest(cohort_archive),  # type: ignore[arg-type]
    )
    assert result.instances == 1
    assert [why for _, why in result.left_out] == [GONE]
    assert out.is_file()


def test_a_strict_export_is_refused_when_an_instance_is_gone(
    config: Config,
    cohort_archive: Archive,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "cohort.zip"
    with pytest.raises(ExportBlocked, match=GONE):
        export(
            config,
            cohort_archive,
            Cohort(),
            out,
            progress=False,
            strict=True,
            on_instance=_forget_the_rest(cohort_archive),  # type: ignore[arg-type]
        )
    assert not out.exists()


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_a_spooled_instance_without_pixels_is_stored_as_from_memory(
    pair: tuple[Side, Side],  # noqa: F811
    syntax: str,
) -> None:
    """The spool's no-pixels branch hands the sender (issuer, patient key,
    calling AE) on to the in-memory path, now as typed arguments rather
    than a keyword dict: the same instance stored either way."""
    ds = xa_instance(frames=1, rows=8, cols=8, transfer_syntax=ExplicitVRLittleEndian)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = syntax
    data, sent = encode(ds)
    first, second = both_ways(pair, data, sent)
    assert_same(pair, first, second)
    assert second.outcome is Outcome.STORED


def test_a_new_issuer_outside_the_scope_is_noted(
    tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """`user issuer` reads the account's scope into a name that `user list`
    used for text: the note names the scope the account keeps."""
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{config.data_dir}"\nkey_dir = "{config.key_dir}"\n',
        encoding="utf-8",
    )

    def user(*args: str) -> int:
        return main(["-c", str(path), "user", *args])

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert user("add", "aigul", "--issuer", "NCC Bishkek", "--password-stdin") == 0
    capsys.readouterr()
    assert user("issuer", "aigul", "--issuer", "NCC Dushanbe") == 0
    note = capsys.readouterr().err
    assert "aigul still sees 'NCC Bishkek' only" in note
