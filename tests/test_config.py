import dataclasses
import os
from pathlib import Path

import pytest

from dicomnode.cli.main import main
from dicomnode.config import Config, ConfigError, RemoteAE, load, to_toml

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_example_states_the_defaults() -> None:
    # The documented file must say what the code does: drift fails here.
    shipped = load(ROOT / "dicomnode.toml", env={})
    # The one AE is TRYIT, for the README's "Try it", from this machine only.
    assert dataclasses.replace(shipped, remote_aes=()) == Config()
    (try_it,) = shipped.remote_aes
    assert (try_it.ae_title, try_it.networks) == ("TRYIT", ("127.0.0.1", "::1"))


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nae_title = "CHD_TEST"\ndimse_port = 11200\n\n'
        '[[remote_ae]]\nae_title = "DUSHANBE_ECHO"\nhost = "10.1.1.1"\nport = 104\n'
        'issuer = "RCC Dushanbe"\n',
        encoding="utf-8",
    )
    config = load(path, env={"DICOMNODE_DIMSE_PORT": "104", "DICOMNODE_REQUIRE_KNOWN_AE": "yes"})
    assert config.ae_title == "CHD_TEST"
    assert config.dimse_port == 104  # the environment wins over the file
    assert config.require_known_ae is True
    assert config.remote_aes == (RemoteAE("DUSHANBE_ECHO", "10.1.1.1", 104, "RCC Dushanbe"),)
    assert config.remote("DUSHANBE_ECHO ").issuer == "RCC Dushanbe"
    assert load(path, env={}) == load(None, env={"DICOMNODE_CONFIG": str(path)})


def test_a_hospital_is_one_issuer_however_the_file_spells_it(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[[remote_ae]]\nae_title = "NCC_ECHO"\nhost = "10.1.1.1"\nport = 104\n'
        'issuer = "National Centre of Cardiology, Bishkek "\n\n'
        '[[remote_ae]]\nae_title = "NCC_CATH"\nhost = "10.1.1.2"\nport = 104\n'
        'issuer = " National  Centre of Cardiology,\\tBishkek"\n\n'
        '[[remote_ae]]\nae_title = "OSH_ECHO"\nhost = "10.1.1.3"\nport = 104\nissuer = "  "\n\n'
        '[[route]]\ndestination = "NCC_ECHO"\nissuer = "National Centre of Cardiology,  Bishkek"\n',
        encoding="utf-8",
    )
    config = load(path, env={})
    hospital = "National Centre of Cardiology, Bishkek"
    assert [r.issuer for r in config.remote_aes] == [hospital, hospital, "OSH_ECHO"]
    assert config.routes[0].matches(hospital, "US")


def test_effective_config_round_trips(tmp_path: Path) -> None:
    config = Config(ae_title="X", remote_aes=(RemoteAE("A", "h", 1, 'Hospital "№1"\\Osh'),))
    path = tmp_path / "effective.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load(path, env={}) == config


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[node]\nae_titel = "X"\n', {}, "unknown key node.ae_titel"),
        ('[node]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n', {}, "AE title"),
        ("[node]\n", {"DICOMNODE_DIMSE_PORT": "eleven"}, "dimse_port"),
        ('[node]\nduplicates = "newest"\n', {}, "duplicates"),
        ('[[remote_ae]]\nae_title = "A"\n', {}, "lacks 'host'"),
        ("[node\n", {}, "node.toml"),
    ],
)
def test_bad_configuration_says_why(tmp_path: Path, text: str, env: dict, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load(path, env=env)


def test_cli_config_and_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nhttp_port = 9090\n", encoding="utf-8")
    assert main(["--config", str(path), "config"]) == 0
    assert "http_port = 9090" in capsys.readouterr().out
    path.write_text('[node]\nhttp_port = "x"\n', encoding="utf-8")
    assert main(["--config", str(path), "config"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "http_port" in err[0]


def test_dicomnode_config_masks_a_database_password(tmp_path: Path) -> None:
    from tests.test_cli import run

    url = "postgresql://chd:s3cret-pass@db.hub.local/dicomnode"
    shown = run(tmp_path, "-c", os.devnull, "config", DICOMNODE_INDEX_URL=url)
    assert shown.returncode == 0
    assert "s3cret" not in shown.stdout and "postgresql://chd:***@db.hub.local" in shown.stdout
