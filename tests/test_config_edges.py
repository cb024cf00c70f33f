"""Configurations an outside reviewer got past the checks: each one either
did damage (an empty data_dir), silently did nothing (a duplicated AE), or
ended in a traceback instead of one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.config import Config, ConfigError, load, without_secrets

AE = '[[remote_ae]]\nae_title = "{title}"\nhost = "127.0.0.1"\nport = 104\nissuer = "NCC {n}"\n'


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dicomnode.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[node]\ndata_dir = ""\n', "data_dir"),
        ('[node]\ndata_dir = "."\n', "data_dir"),
        ('[node]\nkey_dir = ""\n', "key_dir"),
        ('[node]\ndata_dir = "  var "\n', "spaces"),
        ("[node]\nmax_pdu_size = 99999999999\n", "max_pdu_size"),
        ('[node]\nindex_url = "sqlite://"\n', "index_url"),
        ('[node]\nindex_url = "sqlite:///:memory:"\n', "index_url"),
        ("[node]\nmax_associations = 0\n", "max_associations"),
        ("[node]\nlogin_attempts = 0\n", "login_attempts"),
        ("[node]\npassword_min_length = 0\n", "password_min_length"),
        ("[node]\nexport_keep_hours = 0\n", "export_keep_hours"),
        ('[node]\nae_title = "CHDNODE "\n', "spaces"),
        (AE.format(title="ECHO1 ", n=1), "spaces"),
        (AE.format(title="ECHO1", n=1) + AE.format(title="ECHO1", n=2), "twice"),
        ('[[remote_aes]]\nae_title = "X"\n', "[[remote_ae]]"),
        ('[[routes]]\ndestination = "X"\n', "[[route]]"),
    ],
)
def test_a_setting_that_would_do_harm_or_nothing_is_refused(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=None) as refused:
        load(written(tmp_path, text), env={})
    message = str(refused.value)
    assert says in message, message
    assert "\n" not in message
    assert "goes under [node]" not in message or says == "[node]"


@pytest.mark.parametrize(
    "content",
    [b'\xef\xbb\xbf[node]\nae_title = "X"\n', b'[node]\nae_title = "\xff\xfe"\n'],
    ids=["byte order mark", "not utf-8"],
)
def test_a_file_that_is_not_plain_utf8_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "dicomnode.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load(path, env={})
    assert str(path) in str(refused.value) and "UTF-8" in str(refused.value)


def test_a_folder_given_as_the_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load(tmp_path, env={})


def test_an_index_url_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    text = '[node]\nindex_url = "postgresql://u:pw@db:port/chd"\n'
    with pytest.raises(ConfigError, match="index_url") as refused:
        load(written(tmp_path, text), env={})
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:S3CRETQ@h/db",
        "postgresql://u@h/db?password=S3CRETQ",
        "postgresql:///db?host=h&user=u&password=S3CRETQ",
        "postgresql://u@h/db?sslpassword=S3CRETQ&sslmode=require",
    ],
)
def test_the_shown_configuration_holds_no_password(url: str) -> None:
    shown = without_secrets(Config(index_url=url)).index_url
    assert "S3CRETQ" not in shown and shown.startswith("postgresql")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:S3CRETQ@h/db",
        "postgresql+psycopg://u@h/db?password=S3CRETQ&sslmode=require",
        "postgresql+psycopg://u@h/db?PassWord=S3CRETQ",
    ],
)
def test_a_backup_never_puts_the_password_on_the_command_line(url: str) -> None:
    from dicomnode.ops.pgdump import _libpq

    dsn, env = _libpq(url)
    assert "S3CRETQ" not in dsn and env["PGPASSWORD"] == "S3CRETQ"
    assert "sslmode=require" in dsn or "sslmode" not in url


def test_a_backup_refuses_an_sslpassword_it_would_have_to_show() -> None:
    from dicomnode.ops.pgdump import DumpError, _libpq

    with pytest.raises(DumpError, match="sslpassword"):
        _libpq("postgresql://u@h/db?sslpassword=S3CRETQ")
