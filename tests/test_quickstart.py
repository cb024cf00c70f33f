"""README's quick start as a newcomer follows it, on a fresh directory.

The commands are read from README.md and the Makefile, so the test fails
when either drifts from what the node does. The only liberty taken: the
documented ports (11112, 8080) become 0, the ones bound read from the
node's banner, since other nodes may run on this machine, and the
placeholder study folder becomes a synthetic one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import Config, load
from dicomnode.dimse.access import AccessPolicy
from dicomnode.ops.samples import PATIENTS, save, xa_instance
from tests.conftest import served

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent  # the virtualenv `make run` installs into
DOCUMENTED_DIMSE, DOCUMENTED_HTTP = "11112", "8080"


def sh_block_after(marker: str) -> list[str]:
    """The commands of the first ```sh block after ``marker``: continuation
    lines joined, comments and blank lines dropped."""
    start = README.index(marker)
    body = README[README.index("```sh\n", start) + 6 :]
    body = body[: body.index("```")]
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            commands.append(text)
    return commands


def make_recipe(target: str) -> list[str]:
    """The Makefile's recipe lines for ``target``, with $(BIN) resolved."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)", str(BIN)))
    return recipe


def try_it() -> tuple[list[str], list[str]]:
    """README's "Try it" block: its exports and its DCMTK commands."""
    commands = sh_block_after("Try it from another terminal")
    exports = [c.split("#")[0].strip() for c in commands if c.startswith("export ")]
    return exports, [c for c in commands if not c.startswith("export ")]


def dcmtk_steps(commands: list[str]) -> list[str]:
    """The DCMTK commands of a block (``mkdir -p got && getscu …``: getscu)."""
    steps = [s.strip() for c in commands for s in c.split("&&")]
    return [s for s in steps if " -aet " in f" {s} "]


def test_try_it_uses_an_ae_the_shipped_configuration_accepts_from_this_machine_only() -> None:
    shipped = load(ROOT / "dicomnode.toml", env={})
    policy = AccessPolicy(shipped)
    exports, commands = try_it()
    commands = dcmtk_steps(commands)
    assert "export TCP_NODELAY=1" in exports  # DCMTK waits on delayed ACKs without it
    assert {c.split()[0] for c in commands} == {"echoscu", "findscu", "dcmsend", "getscu"}
    for command in commands:
        words = command.split()
        calling = words[words.index("-aet") + 1]
        assert words[words.index("-aec") + 1] == shipped.ae_title
        assert DOCUMENTED_DIMSE in words and int(DOCUMENTED_DIMSE) == shipped.dimse_port
        for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            decision = policy.decide(calling, shipped.ae_title, address)
            assert decision.reject is None, (calling, address)
            # C-GET brings back what TRYIT itself may see (its DEMO issuer);
            # no C-MOVE: that would send to another AE.
            assert {"echo", "find", "store", "get"} <= decision.services
            assert "move" not in decision.services
        # From any other address, or under another title, it is refused.
        for address in ("10.20.0.15", "192.168.1.7", "::2", "0.0.0.0"):
            assert policy.decide(calling, shipped.ae_title, address).reject is not None
        assert policy.decide("ECHOSCU", shipped.ae_title, "127.0.0.1").reject is not None
    # A real name can never match: the archive holds pseudonyms only.
    (find,) = [c for c in commands if c.startswith("findscu")]
    name = re.search(r"PatientName='?([^'\s]*)", find)
    assert name and name.group(1).startswith("CHD-"), find
    assert shipped.require_known_ae is True  # trying it opened nothing else


def test_the_documented_defaults_are_the_ones_make_run_uses() -> None:
    shipped = load(ROOT / "dicomnode.toml", env={})
    assert f"port **{DOCUMENTED_DIMSE}**" in README and shipped.dimse_port == int(DOCUMENTED_DIMSE)
    assert f"http://127.0.0.1:{DOCUMENTED_HTTP}/" in README
    assert (shipped.http_host, shipped.http_port) == ("127.0.0.1", int(DOCUMENTED_HTTP))
    assert (shipped.data_dir, shipped.key_dir) == (Path("var"), Path("secrets"))
    assert "`./var/`" in README and "`./secrets/`" in README
    assert sh_block_after("## Quick start")[0].startswith("make run")
    recipe = make_recipe("run")
    assert recipe == [f"{BIN}/dicomnode demo", f"{BIN}/dicomnode serve"]
    assert "check:" in (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "`make check`" in README


@pytest.fixture
def fresh_directory(tmp_path: Path) -> Path:
    """Where a newcomer runs `make run`: the shipped configuration, nothing else."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    shutil.copy(ROOT / "dicomnode.toml", folder / "dicomnode.toml")
    return folder


def node_environment(dimse: int, http: int) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOMNODE_")}
    environment.pop("TCP_NODELAY", None)  # README's block sets it, or the test shows it missing
    environment.update(DICOMNODE_DIMSE_PORT=str(dimse), DICOMNODE_HTTP_PORT=str(http))
    return environment


@pytest.fixture
def started_node(fresh_directory: Path) -> Iterator[tuple[Path, dict[str, str], str, str]]:
    """`make run`'s recipe in the fresh directory: the demo load, its printed
    login, then the node in the foreground until Ctrl-C."""
    for tool in ("echoscu", "findscu", "dcmsend"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make peers`")
    environment = node_environment(0, 0)  # any free ports: the banner says which
    demo, serve = make_recipe("run")
    loaded = subprocess.run(
        [*demo.split(), "--no-progress"],
        cwd=fresh_directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    documented = re.search(r"\(`(web login: demo / )…`\)", README)
    assert documented, "README no longer says how the login is printed"
    login = re.search(re.escape(documented.group(1)) + r"(\S+)", loaded.stdout)
    assert login, loaded.stdout
    process = subprocess.Popen(
        serve.split(),
        cwd=fresh_directory,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline() if process.stdout else ""
        assert "web http://127.0.0.1:" in banner, (banner, process.stderr.read(2000))
        dimse, base = served(banner)
        assert dimse != 0 and not base.endswith(":0"), banner
        environment["DICOMNODE_DIMSE_PORT"] = str(dimse)  # where "Try it" calls
        yield fresh_directory, environment, base, login.group(1)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as README says
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    for patient in PATIENTS:  # the log never names a child
        assert patient.name not in stderr and patient.patient_id not in stderr


def run_try_it(
    command: str, exports: list[str], environment: dict[str, str], study: Path, uid: str = ""
) -> subprocess.CompletedProcess[str]:
    """One command of "Try it" as a newcomer runs it, in a folder of its own
    (getscu writes into ./got), with a study UID findscu listed for the
    README's placeholder."""
    port = environment["DICOMNODE_DIMSE_PORT"]
    text = re.sub(rf"\b{DOCUMENTED_DIMSE}\b", port, command).replace("/path/to/study/", f"{study}/")
    text = text.replace("StudyInstanceUID=2.25.…", f"StudyInstanceUID={uid}")
    return subprocess.run(
        ["bash", "-c", "; ".join([*exports, text])],
        cwd=study.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def open_a_study_and_see_it_play(base: str, password: str, screenshot: Path) -> list[str]:
    """Log in as the printed account, open an angio study, watch the frame
    counter move; returns every answer of the node that was an error."""
    from playwright.sync_api import expect

    from tests.test_browser import chromium

    failures: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on(
            "response",
            lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        page.goto(base + "/")
        page.fill("input[name=username]", "demo")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.select_option("select[name=modality]", "XA")
        page.click("form.search button[type=submit]")
        page.wait_for_url("**modality=XA**")
        rows = page.locator("table.studies tbody a")
        # The demo's three angio studies, the PDA worked example's two and the one sent.
        expect(rows).to_have_count(6)
        page.locator("table.studies tbody tr", has_not_text="Worked example").first.locator(
            "a"
        ).first.click()
        counter = page.locator("#counter")
        expect(counter).to_have_text(re.compile(r"^[1-9]\d* / [1-9]\d*$"), timeout=60_000)
        first = counter.inner_text()
        expect(counter).not_to_have_text(first, timeout=30_000)  # the cine plays
        page.screenshot(path=str(screenshot))
        page.goto(base + "/")  # one more page load, after the icon was learnt
        expect(page.locator("table.studies")).to_be_visible()
    return failures


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.timeout(1200)
def test_quick_start_as_written_on_a_fresh_directory(started_node, tmp_path: Path) -> None:
    folder, environment, base, password = started_node
    assert base.startswith("http://127.0.0.1:")
    study = tmp_path / "study"
    save(xa_instance(PATIENTS[4], frames=4, rows=64, cols=64), study / "run1.dcm")
    exports, commands = try_it()
    uid = ""
    for command in commands:
        result = run_try_it(command, exports, environment, study, uid)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        if "getscu" in command:  # the study came back, decompressed if need be
            got = list((study.parent / "got").iterdir())
            assert got and all(dcmread(f).SOPInstanceUID for f in got), result.stderr[-2000:]
        if command.startswith("dcmsend"):  # its exit code is 0 whatever the answer
            assert re.search(r"with status SUCCESS\s*: 1\b", result.stderr), result.stderr[-2000:]
        if command.startswith("findscu"):
            output = result.stderr + result.stdout
            names = re.findall(r"\(0010,0010\) PN \[([^\]]*)\]", output)
            modalities = re.findall(r"\(0008,0061\) CS \[([^\]]*)\]", output)
            # DCMTK prints the NUL that pads an odd-length UID; a person copying
            # it from the terminal does not see it.
            uid = re.findall(r"\(0020,000d\) UI \[([^\]]*)\]", output)[0].strip("\0 ")
            assert len(names) >= 3 and all(n.strip().startswith("CHD-") for n in names), names
            assert modalities and all("XA" in m for m in modalities), modalities
            assert not any(p.name.split("^")[0] in output for p in PATIENTS)
    stats = subprocess.run(
        [str(BIN / "dicomnode"), "stats", "--json"],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Three studies of two runs, the PDA worked example's three and the sent run.
    assert json.loads(stats.stdout)["modalities"].get("XA", 0) == 3 * 2 + 3 + 1
    from tests.test_browser import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    failures = open_a_study_and_see_it_play(base, password, ARTIFACTS / "quickstart-cine.png")
    assert failures == []  # no asset missing, no icon refused
    refused = subprocess.run(
        [str(BIN / "dicomnode"), "audit", "list", "--failures"],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 0
    events = [line.split()[2] for line in refused.stdout.splitlines() if line.strip()]
    assert "access-denied" not in events and "login" not in events, refused.stdout


def test_a_fresh_directory_holds_only_the_shipped_file(fresh_directory: Path) -> None:
    # No state from earlier runs may make the quick start pass by accident.
    assert [p.name for p in fresh_directory.iterdir()] == ["dicomnode.toml"]
    shipped = load(fresh_directory / "dicomnode.toml", env={})
    assert replace(shipped, remote_aes=()) == Config()
