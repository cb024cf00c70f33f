import dataclasses
import os
from pathlib import Path

import pytest

from dicomnode.cli.main import main
from dicomnode.config import (
    Config,
    ConfigError,
    RemoteAE,
    RouteRule,
    deid_policies,
    load,
    to_toml,
)
from dicomnode.deid.profile import Option

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
    config = load(path, env={"DICOMNODE_DIMSE_PORT": "104", "DICOMNODE_REQUIRE_KNOWN_AE": "TRUE"})
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
        ('[node]\nae_titel = "X"\n', {}, r"unknown key 'ae_titel' in \[node\]"),
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


@pytest.mark.slow
def test_dicomnode_config_masks_a_database_password(tmp_path: Path) -> None:
    from tests.test_cli import run

    url = "postgresql://chd:s3cret-pass@db.hub.local/dicomnode"
    shown = run(tmp_path, "-c", os.devnull, "config", DICOMNODE_INDEX_URL=url)
    assert shown.returncode == 0
    assert "s3cret" not in shown.stdout and "postgresql://chd:***@db.hub.local" in shown.stdout


# -- strict loading: what a hurried operator or a careless copy writes ------

ENTRY = '[[remote_ae]]\nae_title = "OSH_ECHO"\nhost = "10.1.1.3"\nport = 104\n'


def _fails(tmp_path: Path, text: str, env: dict | None = None) -> str:
    """The one-line error ``load`` gives for ``text``; it names the file."""
    path = tmp_path / "misspelt.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load(path, env=env or {})
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ("max_conections = 10\n", "max_conections", "top level"),
        ("max_connections = 10\n", "max_connections", "[node]"),  # forgot the header
        ("[nodes]\nae_title = 'X'\n", "nodes", "top level"),
        ("[node]\nmax_conections = 10\n", "max_conections", "[node]"),
        (ENTRY + "quota_mbb = 500\n", "quota_mbb", "OSH_ECHO"),
        (ENTRY + "tlss = true\n", "tlss", "OSH_ECHO"),
        (ENTRY + '[[route]]\ndestinaton = "OSH_ECHO"\n', "destinaton", "[[route]] #1"),
    ],
)
def test_a_misspelt_key_is_refused_wherever_it_is(
    tmp_path: Path, text: str, key: str, where: str
) -> None:
    message = _fails(tmp_path, text)
    assert f"unknown key '{key}'" in message
    assert where in message and "misspelt.toml" in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (ENTRY + 'tls = "false"\n', "tls", "true or false"),
        (ENTRY + "tls = 1\n", "tls", "true or false"),
        (ENTRY + 'tls = "yes"\n', "tls", "true or false"),
        ('[node]\nocr = "false"\n', "ocr", "true or false"),
        ("[node]\nrequire_known_ae = 0\n", "require_known_ae", "true or false"),
        ('[[remote_ae]]\nae_title = "A"\nhost = "h"\nport = "104"\n', "port", "whole number"),
        ("[node]\ndimse_port = true\n", "dimse_port", "whole number"),
        ("[node]\ndimse_port = 104.5\n", "dimse_port", "whole number"),
        (ENTRY + "quota_mb = -5\n", "quota_mb", "0 or more"),
        ("[node]\nmax_find_results = -1\n", "max_find_results", "0 or more"),
        ('[node]\nhttp_header_seconds = "10"\n', "http_header_seconds", "number"),
        ("[node]\nforward_interval_seconds = -1.0\n", "forward_interval_seconds", "positive"),
        ("[node]\nocr_budget_seconds = nan\n", "ocr_budget_seconds", "positive"),
        (ENTRY + 'services = "store"\n', "services", "list"),
        (ENTRY + 'networks = "10.1.1.0/24"\n', "networks", "list"),
        (ENTRY + 'services = ["store", "print"]\n', "services", "'print'"),
        (ENTRY + "query_issuers = [1, 2]\n", "query_issuers", "string"),
        (ENTRY + 'deid_options = "RETAIN_DATES"\n', "deid_options", "RETAIN_DATES"),
        ('[node]\ndeid_options = "CLEAN_DESCRIPTORS,RETAIN_UID"\n', "deid_options", "RETAIN_UID"),
        ('[node]\ndeid_options = "CLEAN_PIXEL_DATA"\n', "deid_options", "CLEAN_PIXEL_DATA"),
        ("[node]\ndeid_options = 3\n", "deid_options", "names"),
        ('[node]\nduplicates = "newest"\n', "duplicates", "keep-first"),
        ('[node]\nlog_level = "INFOO"\n', "log_level", "INFO"),
        ('[node]\nsafe_private = "0010:X:01"\n', "safe_private", "0010:X:01"),
        (ENTRY + "blank_rectangles = [[0, 0, 10]]\n", "blank_rectangles", "x0"),
        ("[node]\ndata_dir = 5\n", "data_dir", "string"),
        ("node = 5\n", "node", "table"),
        ('[remote_ae]\nae_title = "A"\n', "remote_ae", "[[remote_ae]]"),
    ],
)
def test_a_wrong_type_names_the_key_and_what_it_should_be(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    message = _fails(tmp_path, text)
    assert f"'{key}'" in message and expected in message and "misspelt.toml" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DICOMNODE_DIMSE_TLS", "yes"),
        ("DICOMNODE_OCR", "off"),
        ("DICOMNODE_REQUIRE_KNOWN_AE", "2"),
        ("DICOMNODE_DIMSE_PORT", "104.0"),
        ("DICOMNODE_DIMSE_PORT", "-104"),
        ("DICOMNODE_MIN_FREE_DISK_MB", ""),
        ("DICOMNODE_HTTP_HEADER_SECONDS", "ten"),
        ("DICOMNODE_DEID_OPTIONS", "RETAIN_MODIFIED_DATE"),
        ("DICOMNODE_DUPLICATES", "newest"),
        ("DICOMNODE_DIMSE_PROT", "104"),  # a misspelt variable is not ignored either
        ("DICOMNODE_REMOTE_AES", "[]"),
    ],
)
def test_a_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(None, env={variable: value})
    assert variable in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("False", False), ("0", False)],
)
def test_environment_booleans_are_exactly_true_false_1_0(value: str, expected: bool) -> None:
    assert load(None, env={"DICOMNODE_DIMSE_TLS": "false", "DICOMNODE_OCR": value}).ocr is expected


def test_environment_values_are_typed_once() -> None:
    config = load(
        None,
        env={
            "DICOMNODE_DIMSE_PORT": "104",
            "DICOMNODE_HTTP_HEADER_SECONDS": "2.5",
            "DICOMNODE_DATA_DIR": "/srv/chd",
            "DICOMNODE_DEID_OPTIONS": "retain_full_dates, CLEAN_DESCRIPTORS",
        },
    )
    assert config.dimse_port == 104 and config.http_header_seconds == 2.5
    assert config.data_dir == Path("/srv/chd")
    assert config.deid_options == frozenset({Option.RETAIN_FULL_DATES, Option.CLEAN_DESCRIPTORS})


def test_options_are_parsed_once_into_enums(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\ndeid_options = "RETAIN_FULL_DATES, clean_descriptors"\n'
        'safe_private = "0019:GEMS_ACQU_01:2A"\n'
        + ENTRY
        + 'deid_options = ["RETAIN_MODIFIED_DATES", "RETAIN_DEVICE_IDENTITY"]\n'
        "blank_rectangles = [[0, 0, 63, 7]]\n\n"
        '[[remote_ae]]\nae_title = "NCC_ECHO"\nhost = "10.1.1.4"\nport = 104\n',
        encoding="utf-8",
    )
    config = load(path, env={})
    assert config.deid_options == frozenset({Option.RETAIN_FULL_DATES, Option.CLEAN_DESCRIPTORS})
    assert config.safe_private == frozenset({(0x0019, "GEMS_ACQU_01", 0x2A)})
    osh, ncc = config.remote_aes
    assert osh.deid_options == frozenset(
        {Option.RETAIN_MODIFIED_DATES, Option.RETAIN_DEVICE_IDENTITY}
    )
    assert ncc.deid_options is None  # the node's
    policies = deid_policies(config)
    assert policies.of("OSH_ECHO ").options == osh.deid_options
    assert policies.of("OSH_ECHO").blank_rectangles == ((0, 0, 63, 7),)
    assert policies.of("OSH_ECHO").safe_private == config.safe_private
    assert policies.of("NCC_ECHO").options == config.deid_options
    assert policies.of("NCC_ECHO").blank_rectangles == ()
    assert policies.of(None) == policies.of("STRANGER") == policies.default
    assert load(path, env={}) == config  # deterministic
    again = tmp_path / "again.toml"
    again.write_text(to_toml(config), encoding="utf-8")
    assert load(again, env={}) == config


def test_every_field_round_trips_through_to_toml(tmp_path: Path) -> None:
    remote = RemoteAE(
        "OSH_ECHO",
        "10.1.1.3",
        104,
        "Osh",
        deid_options=frozenset({Option.RETAIN_FULL_DATES}),
        blank_rectangles=((0, 0, 9, 4), (5, 5, 6, 6)),
        networks=("10.1.1.0/24",),
        services=("echo", "store"),
        max_associations=2,
        quota_mb=500,
        tls_subject="echo.osh",
        tls_fingerprint="ab" * 32,
        query_issuers=("*",),
        move_destinations=("OSH_ECHO",),
    )
    config = Config(
        http_header_seconds=2.5,
        safe_private=frozenset({(0x0009, "ACME ECHO 1.0", 0x01), (0x0019, "GEMS_ACQU_01", 0x2A)}),
        deid_options=frozenset(),
        spool_dir=Path("/tmp/spool"),
        remote_aes=(remote,),
        routes=(RouteRule("OSH_ECHO", "Osh", "US,XA"),),
    )
    path = tmp_path / "effective.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load(path, env={}) == config


def test_defaults_stand_in_one_place() -> None:
    from dicomnode.deid.header import DeidSettings
    from dicomnode.deid.options import DEFAULT_OPTIONS, DeidPolicy

    assert Config().deid_options == DEFAULT_OPTIONS == DeidPolicy().options
    assert DeidSettings().options == DEFAULT_OPTIONS
    source = (ROOT / "dicomnode" / "config.py").read_text(encoding="utf-8")
    assert "RETAIN_MODIFIED_DATES" not in source  # the default lives in deid.options
    for name in ("quota_mb", "networks", "move_destinations", "blank_rectangles"):
        assert source.count(f'"{name}"') == 0, name  # remote fields come from dataclasses


def test_cli_reports_a_misspelt_key_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(ENTRY + "quota_mbb = 500\n", encoding="utf-8")
    assert main(["--config", str(path), "config"]) == 4
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "quota_mbb" in line and "OSH_ECHO" in line and str(path) in line
