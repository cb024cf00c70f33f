"""Where a configuration value came from, and what it may be: an empty
environment variable, errors blamed on the right source, entries named as
the documentation names them, lower bounds on time settings, named values
as enums, one default per setting, strings parsed once at load."""

from __future__ import annotations

import inspect
import ipaddress
from pathlib import Path

import pytest

from dicomnode.config import Config, ConfigError, LogLevel, RouteRule, load, to_toml
from storage.archive import Archive, DuplicatePolicy

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgresql://chd@db.hub.local/dicomnode"
TWO = (
    '[[remote_ae]]\nae_title = "NCC_ECHO"\nhost = "10.1.1.4"\nport = 104\n\n'
    '[[remote_ae]]\nae_title = "OSH_ECHO"\nhost = "10.1.1.3"\nport = 104\n'
)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rb.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load(path, env=env)
    message = str(raised.value)
    assert "\n" not in message
    return message


# -- 1. an empty variable is a mistake, not "use the default" ---------------


@pytest.mark.parametrize(
    "variable",
    [
        "DICOMNODE_INDEX_URL",
        "DICOMNODE_BLOB_URL",
        "DICOMNODE_CORS_ORIGINS",
        "DICOMNODE_TRUSTED_PROXIES",
        "DICOMNODE_DEID_OPTIONS",
        "DICOMNODE_TLS_CA_CERTIFICATES",
        "DICOMNODE_SPOOL_DIR",
    ],
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_does_not_override_the_file(
    tmp_path: Path, variable: str, value: str
) -> None:
    path = _file(tmp_path, f'[node]\nindex_url = "{POSTGRES}"\n')
    message = _error(path, {variable: value})
    assert message.startswith(f"environment variable {variable}")
    assert "set but empty: unset it to use the file's value" in message
    assert str(path) not in message
    assert load(path, env={}).effective_index_url == POSTGRES


# -- 2. an error names the source of the value ------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("DICOMNODE_SPOOL_THRESHOLD_MB", "0", "spool_threshold_mb"),
        ("DICOMNODE_DIMSE_PORT", "70000", "dimse_port"),
        ("DICOMNODE_AE_TITLE", "A\\B", "AE title"),
        ("DICOMNODE_HTTP_THREADS", "0", "http_threads"),
        ("DICOMNODE_FORWARD_INTERVAL_SECONDS", "0.000000001", "forward_interval_seconds"),
    ],
)
def test_a_bad_environment_value_is_not_blamed_on_the_file(
    tmp_path: Path, variable: str, value: str, key: str
) -> None:
    path = _file(tmp_path, "[node]\nspool_threshold_mb = 64\n")
    message = _error(path, {variable: value})
    assert message.startswith(f"environment variable {variable}: ")
    assert key in message and str(path) not in message


def test_a_bad_file_value_names_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "[node]\nspool_threshold_mb = 0\n")
    message = _error(path, {"DICOMNODE_HTTP_PORT": "9090"})
    assert message.startswith(f"{path}: ") and "spool_threshold_mb" in message
    assert "DICOMNODE" not in message


def test_a_cross_field_error_names_the_file_only_when_the_values_came_from_it(
    tmp_path: Path,
) -> None:
    both = _file(tmp_path, "[node]\nmax_connections = 4\nmax_pending_per_address = 8\n")
    assert _error(both, {}).startswith(f"{both}: max_pending_per_address")
    mixed = _error(both, {"DICOMNODE_MAX_PENDING_PER_ADDRESS": "6"})
    assert mixed.startswith("configuration") and "DICOMNODE_MAX_PENDING_PER_ADDRESS" in mixed
    tls = _error(_file(tmp_path, "[node]\n"), {"DICOMNODE_DIMSE_TLS": "true"})
    assert tls.startswith("configuration") and str(both) + ":" not in tls
    assert "DICOMNODE_DIMSE_TLS" in tls
    assert _error(None, {"DICOMNODE_DIMSE_TLS": "true"}).startswith("configuration")


# -- 3. entries are named as docs/operations.md names them ------------------


def test_entry_errors_name_the_entry_as_the_documentation_does(tmp_path: Path) -> None:
    bad_network = _file(tmp_path, TWO + 'networks = ["10.1.1.0/33"]\n')
    message = _error(bad_network, {})
    assert "[[remote_ae]] #2 (ae_title 'OSH_ECHO')" in message, message
    route = _file(
        tmp_path,
        TWO + '\n[[route]]\ndestination = "NCC_ECHO"\n\n[[route]]\ndestination = "NOWHERE"\n',
    )
    message = _error(route, {})
    assert "[[route]] #2" in message and "NOWHERE" in message, message
    moves = _file(tmp_path, TWO + 'move_destinations = ["GONE"]\n')
    assert "[[remote_ae]] #2 (ae_title 'OSH_ECHO')" in _error(moves, {})
    documented = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "`[[remote_ae]] #2 (ae_title\n'OSH_ECHO')`" in documented
    assert "`[[route]] #1`" in documented


# -- 4. time settings have a floor ------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("forward_interval_seconds", "1e-9"),
        ("forward_interval_seconds", "0.01"),
        ("http_header_seconds", "0.001"),
        ("association_request_seconds", "1e-6"),
        ("ocr_budget_seconds", "1e-9"),
        ("network_timeout", "0"),
        ("acse_timeout", "0"),
        ("dimse_timeout", "0"),
        ("poll_interval_us", "0"),
    ],
)
def test_a_time_setting_below_its_floor_is_refused(tmp_path: Path, key: str, value: str) -> None:
    message = _error(_file(tmp_path, f"[node]\n{key} = {value}\n"), {})
    assert key in message and "at least" in message, message
    variable = f"DICOMNODE_{key.upper()}"
    assert variable in _error(None, {variable: value})


def test_the_floors_leave_room_for_the_fast_tests(tmp_path: Path) -> None:
    # tests/test_crash_jobs.py runs the node with forwarding passes 50 ms apart.
    fast = Config(forward_interval_seconds=0.05, http_header_seconds=1.5, network_timeout=1)
    path = _file(tmp_path, to_toml(fast))
    assert load(path, env={}) == fast


# -- 5. named values are enums, one default --------------------------------


def test_duplicates_and_log_level_are_enums(tmp_path: Path) -> None:
    assert Config().duplicates is DuplicatePolicy.KEEP_FIRST
    assert Config().log_level is LogLevel.INFO
    config = load(_file(tmp_path, '[node]\nduplicates = "replace"\nlog_level = "debug"\n'), {})
    assert config.duplicates is DuplicatePolicy.REPLACE and config.log_level is LogLevel.DEBUG
    assert load(None, {"DICOMNODE_DUPLICATES": "replace"}).duplicates is DuplicatePolicy.REPLACE
    message = _error(None, {"DICOMNODE_DUPLICATES": "newest"})
    assert "'keep-first', 'replace'" in message
    source = (ROOT / "dicomnode" / "config.py").read_text(encoding="utf-8")
    # Each allowed value is spelt once: in its enum (LogLevel here, DuplicatePolicy in storage).
    assert '"keep-first"' not in source and source.count('"WARNING"') == 1


# -- 6. one default in one place ---------------------------------------------


def _required(function: object, *names: str) -> None:
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    for name in names:
        assert parameters[name].default is inspect.Parameter.empty, f"{function}: {name}"


def test_defaults_are_not_repeated_below_the_configuration() -> None:
    from dicomnode.deid import ocr, verify
    from dicomnode.dimse import transport
    from dicomnode.media import transcode

    _required(ocr.verify, "most_frames", "budget_seconds")
    _required(verify.OcrSettings, "enabled", "most_frames", "budget_seconds")
    _required(transcode.decompressed, "limit")
    _required(transcode.transcode, "limit")
    _required(Archive, "duplicates")
    assert not hasattr(transcode, "DEFAULT_LIMIT")
    for name in ("max_connections", "max_pending_per_address", "association_request_seconds"):
        assert name not in vars(transport.NodeAssociationServer), name
    config = Config()
    settings = verify.OcrSettings.of(config)
    assert (settings.most_frames, settings.budget_seconds) == (
        config.ocr_frames,
        config.ocr_budget_seconds,
    )


# -- 7. strings parsed once, at load -----------------------------------------


def test_lists_in_strings_are_parsed_at_load(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '[node]\ntrusted_proxies = "10.9.0.1, 10.9.1.0/24"\n'
        'cors_origins = "HTTPS://OHIF.Hospital.org:443, http://[::1]:3000"\n'
        + TWO
        + '\n[[route]]\ndestination = "OSH_ECHO"\nmodalities = " us, XA ,"\n',
    )
    config = load(path, env={})
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.9.0.1"),
        ipaddress.ip_network("10.9.1.0/24"),
    )
    assert config.cors_origins == ("https://ohif.hospital.org", "http://[::1]:3000")
    (route,) = config.routes
    assert route.modalities == frozenset({"US", "XA"})
    assert route.matches("OSH_ECHO", "xa") and not route.matches("OSH_ECHO", "CT")
    assert RouteRule("OSH_ECHO").matches("X", None)
    again = _file(tmp_path, to_toml(config))
    assert load(again, env={}) == config
    from_env = load(None, {"DICOMNODE_TRUSTED_PROXIES": "10.9.0.1,::1"})
    assert from_env.trusted_proxies[1] == ipaddress.ip_network("::1")
    message = _error(None, {"DICOMNODE_TRUSTED_PROXIES": "10.9.0.1, proxy.local"})
    assert message.startswith("environment variable DICOMNODE_TRUSTED_PROXIES")
    assert "'proxy.local'" in message


def test_the_web_reads_the_parsed_values() -> None:
    for module in ("address.py", "cors.py"):
        source = (ROOT / "viewer" / module).read_text(encoding="utf-8")
        assert "parse_origins" not in source and "ip_network(" not in source, module
    source = (ROOT / "dicomnode" / "config.py").read_text(encoding="utf-8")
    assert "self.modalities.split" not in source


def test_an_empty_config_variable_does_not_fall_back_to_another_file(tmp_path: Path) -> None:
    # ./dicomnode.toml (or the defaults) instead of the file meant: refused too.
    message = _error(None, {"DICOMNODE_CONFIG": ""})
    assert message == (
        "environment variable DICOMNODE_CONFIG is set but empty: unset it to use the file's value"
    )
