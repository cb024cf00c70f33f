"""Every page in Russian and in Chinese, as each role that can see it, with
nothing left in English but names, pseudonyms and values of the data.

A cardiologist, a researcher and an administrator each read their pages in
headless Chromium; the test collects all text of each page (hidden parts
too, option labels, title, placeholder, aria-label and alt attributes),
what dialogs and failing actions say, and lists every Latin word that is
neither a value of the data nor on the small allow-list below."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from pydicom.uid import UID
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.consult.identity import Unavailable, open_case
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Outcome
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, sample_file, us_phantom, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import incoming
from tests.test_browser import chromium
from tests.test_i18n import CITATION, proposals
from viewer.permissions import RULES

pytestmark = [pytest.mark.slow, pytest.mark.peers]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct horse battery"
USERS = {"amina": "cardiologist", "zarina": "researcher", "bakyt": "admin"}
PARTNER = "aigul"  # a cardiologist of NCC Bishkek, a partner hospital
# Latin words a page may show in any language: units and codes of the
# trade, the standard's and the command line's own words, keyboard keys.
ALLOWED_WORDS = """
    AE CHD CSV ZIP DICOM DICOMDIR DICOMweb OCR UID UIDs UTC GMT MB CSRF STOW RS JPEG PNG PDF
    US XA SR ECG OT CT MR VTI
    Home End Esc shift Shift Ctrl Delete Enter
    English
    Krichenko Haycock Amplatzer Septal Duct Muscular Occluder NCT ASE SCAI PMID OHIF
    dicomnode quarantine release reviewed show refuse out FILE why TEXT blank rectangles
"""
# By line: codes and abbreviations of the trade and the standard; modality
# codes (and the velocity-time integral's); keys as printed on them; the
# language menu naming each language in itself; proper names (OHIF, the
# viewer; Haycock's formula), societies and citation identifiers; the
# commands the quarantine page quotes.
ALLOWED = set(ALLOWED_WORDS.split())
TOKEN = re.compile(r"[A-Za-z]{2,}")
DEVICE = re.compile(r"Amplatzer(?: [A-Z]\w*)+")
UUID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b[0-9a-f]{16,}\b")
COLLECT = """() => {
  const texts = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const parent = walker.currentNode.parentElement;
    if (parent && !parent.closest("script, style")) texts.push(walker.currentNode.textContent);
  }
  for (const element of document.querySelectorAll("[title], [placeholder], [aria-label], [alt]")) {
    for (const name of ["title", "placeholder", "aria-label", "alt"]) {
      if (element.hasAttribute(name)) texts.push(element.getAttribute(name));
    }
  }
  for (const input of document.querySelectorAll("input[type=submit], input[type=button]")) {
    texts.push(input.value);
  }
  return texts.map((t) => t.trim()).filter(Boolean);
}"""


@pytest.fixture
def node(config: Config) -> Iterator[Node]:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        for name, role in USERS.items():
            node.archive.index.accounts.add(name, generate_password_hash(PASSWORD), role)
        node.archive.index.accounts.add(
            PARTNER, generate_password_hash(PASSWORD), "partner", issuer="NCC Bishkek"
        )
        data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
        assert node.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
        xa = xa_instance(PATIENTS[0], frames=4, rows=64, cols=64)
        xa.PatientWeight = "0"  # a placeholder: shown as unknown, never "0.0 kg"
        assert node.ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        # Another hospital's child: what a partner of Bishkek must not reach.
        phantom = incoming(us_phantom(PATIENTS[2]), calling_ae="DUSHANBE_ECHO")
        assert node.ingestor.ingest(phantom).status == 0
        held = us_phantom(PATIENTS[1])
        del held.SequenceOfUltrasoundRegions  # nothing says where text may be: held
        assert node.ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
        uids = [row["SOPInstanceUID"] for row in images(node)]
        node.archive.index.forwarding.enqueue(uids[:1], "PACS_BISHKEK")
        yield node


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def images(node: Node) -> list[dict]:
    keys = {
        "StudyInstanceUID": "",
        "SOPInstanceUID": "",
        "SOPClassUID": "",
        "Modality": "",
        "SeriesDescription": "",
    }
    return list(node.archive.index.find(Query(Level.IMAGE, keys)))


def data_values(node: Node) -> list[str]:
    """Values of the data itself, as the pages may quote them: pseudonyms,
    hospitals, descriptions, AE titles, user names, the SOP classes of held
    instances, published sources, the endpoints the audit trail names. The
    node's own report series are not data: their label is the page's."""
    values: list[str] = [*USERS, PARTNER, "PACS_BISHKEK", "BISHKEK_ECHO", "BISHKEK_CATH"]
    # A partner sees its own children as its hospital knows them.
    for case in node.archive.index.cases.listing(hospital="NCC Bishkek"):
        with contextlib.suppress(Unavailable):
            linked = open_case(
                node.config, node.archive.index, node.archive.index.cases.get(case.ref)
            )
            for found in linked.by_study.values():
                values += [found.patient_id, *found.patient_name.replace("^", " ").split()]
    study_keys = dict.fromkeys(
        ("PatientID", "IssuerOfPatientID", "StudyDescription", "StudyInstanceUID"), ""
    )
    for row in node.archive.index.find(Query(Level.STUDY, study_keys)):
        values += [str(v) for v in row.values() if v]
    for row in images(node):
        if row["Modality"] != "SR":
            values += [str(v) for v in row.values() if v]
            values.append(UID(row["SOPClassUID"]).name)
    for row in node.archive.index.quarantined():
        values += [str(row.get("pseudonym") or ""), UID(row["sopclassuid"] or "").name]
    # Published sources are cited as published (authors, journals, trials);
    # "instructions for use" and the like are the page's to translate.
    # A citation is quoted to its page numbers, what follows in brackets
    # translated ("(ASE/SCAI guideline)"); device names stay as marketed.
    sources = {r.source for p in proposals() for r in [p.rule, *p.rules]}
    for part in (part for source in sources for part in source.split("; ")):
        if CITATION.search(part) and "NCT" not in part:
            values.append(part.split(" (")[0])
        values += DEVICE.findall(part)
    values += list(RULES)  # endpoint names
    values += [case.ref for case in node.archive.index.cases.listing()]
    return sorted({v.strip() for v in values if v.strip()}, key=len, reverse=True)


def english_left(texts: list[str], data: list[str]) -> dict[str, list[str]]:
    """Latin words left in ``texts`` once the data's own values are taken out."""
    found: dict[str, list[str]] = {}
    for text in texts:
        rest = UUID.sub(" ", text)
        for value in data:
            rest = rest.replace(value, " ")
        for word in TOKEN.findall(rest):
            if word not in ALLOWED:
                found.setdefault(word, []).append(text[:120])
    return found


class Reader:
    """One user's browser context in one language; everything read is kept."""

    def __init__(self, browser: Browser, base: str, language: str, user: str | None) -> None:
        locale = {"ru": "ru-RU", "zh": "zh-CN"}[language]
        self.context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
        self.page: Page = self.context.new_page()
        self.base, self.language, self.texts = base, language, []
        self.page.on("dialog", self._dialog)
        if user:
            self.log_in(user, PASSWORD)
            expect(self.page.locator("header .who")).to_contain_text(user)

    def _dialog(self, dialog) -> None:
        self.texts.append(dialog.message)
        dialog.accept()  # a confirmation asked is given

    def log_in(self, user: str, password: str) -> None:
        self.page.goto(self.base + "/login")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("form.login button[type=submit]")

    def read(self, name: str) -> None:
        self.texts += self.page.evaluate(COLLECT)
        self.page.screenshot(path=str(ARTIFACTS / f"lang-{self.language}-{name}.png"))

    def open(self, path: str, name: str) -> None:
        self.page.goto(self.base + path)
        self.read(name)

    def close(self) -> None:
        self.context.close()


def study_with(node: Node, description: str) -> str:
    return next(
        row["StudyInstanceUID"]
        for row in images(node)
        if row.get("SeriesDescription") == description
    )


def clip_point(page: Page, size: tuple[int, int], point: tuple[float, float]) -> tuple:
    """The page position of image pixel ``point`` (object-fit: contain)."""
    box = page.locator(".viewport canvas").first.bounding_box()
    scale = min(box["width"] / size[0], box["height"] / size[1])
    left = box["x"] + (box["width"] - size[0] * scale) / 2
    top = box["y"] + (box["height"] - size[1] * scale) / 2
    return left + (point[0] + 0.5) * scale, top + (point[1] + 0.5) * scale


def cardiologist_pages(reader: Reader, node: Node) -> None:
    page = reader.page
    reader.open("/", "studies")
    phantom = study_with(node, "Calibration phantom")
    page.goto(f"{reader.base}/studies/{phantom}")
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 1")
    page.select_option("#tool", "length")
    page.mouse.click(*clip_point(page, (640, 480), (200, 240)))
    page.mouse.click(*clip_point(page, (640, 480), (240, 240)))  # 20 mm in the region
    expect(page.locator("#measurements li")).to_have_count(1)
    page.mouse.click(*clip_point(page, (640, 480), (3, 3)))
    page.mouse.click(*clip_point(page, (640, 480), (12, 3)))  # outside it: pixels, and why
    expect(page.locator("#measurements li")).to_have_count(2)
    reader.read("study-measured")
    defects = page.locator("#defect option").evaluate_all("os => os.map(o => o.value)")
    for saved, defect in enumerate(defects, 1):
        page.click("#new-plan")  # one plan per defect
        page.select_option("#defect", defect)
        reader.read(f"plan-{defect.replace(' ', '-')}")
        number = page.locator("#slots input[data-code]").first
        number.fill("450")  # a slip no child's defect has: refused with the reason
        page.click("#save-plan")
        expect(page.locator("#plan-result")).not_to_be_empty()
        reader.read(f"plan-{defect.replace(' ', '-')}-refused")
        number.fill("8")
        page.click("#save-plan")
        expect(page.locator("#plans tbody tr")).to_have_count(saved)
        reader.read(f"plan-{defect.replace(' ', '-')}-saved")
    with page.expect_response(lambda response: response.url.endswith("/sign")):
        page.click("#sign-plan")  # the last plan signed: its label and the print say so
    expect(page.locator("#plan-result li").first).to_be_visible()
    reader.read("plan-signed")
    reader.open(f"/studies/{phantom}/plan/print", "print")
    # The angio clip plays; its weight of 0 kg reads as unknown.
    angio = study_with(node, node_series(node, "XA"))
    page.goto(f"{reader.base}/studies/{angio}")
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 4")
    page.wait_for_function("() => window.viewerState()[0].playing")
    reader.read("study-angio")
    head = page.locator(".study-head").inner_text()
    assert " 0.0 " not in head and "0,0" not in head, head
    case_pages(reader, node)


def case_pages(reader: Reader, node: Node) -> None:
    """The case list, a case, a decision taken in the form."""
    page = reader.page
    node.archive.index.cases.drain()  # the node's pass does this every few seconds
    reader.open("/cases", "cases")
    ref = node.archive.index.cases.listing(hospital="NCC Bishkek")[0].ref
    page.click(f"text={ref}")
    page.select_option("form.case-status select[name=status]", "accepted")
    page.fill("form.case-status input[name=device]", "Amplatzer Septal Occluder")
    page.fill("form.case-status input[name=date]", "2027-03-01")
    page.click("form.case-status button[type=submit]")
    expect(page.locator("table.studies tbody tr")).to_have_count(2)  # the history: two moves
    reader.read("case-accepted")
    page.select_option("form.case-status select[name=status]", "declined")
    page.click("form.case-status button[type=submit]")  # no reason: refused, saying so
    expect(page.locator("form.case-status [role=alert]")).to_be_visible()
    reader.read("case-refused")


def partner_pages(reader: Reader, node: Node) -> None:
    """A partner hospital's cardiologist: its own child named, the centre's
    answer, a note; another hospital's case is not there."""
    page = reader.page
    cases = node.archive.index.cases
    mine = cases.listing(hospital="NCC Bishkek")[0].ref
    others = [c.ref for c in cases.listing() if c.issuer != "NCC Bishkek"]
    assert others, "the fixture holds another hospital's case"
    reader.open("/cases", "cases-partner")
    listed = page.locator("main").inner_text()
    assert mine in listed and not any(ref in listed for ref in others), listed
    page.click(f"text={mine}")
    named = page.locator(".identity strong").inner_text().strip()  # as the hospital knows them
    assert named and not named.startswith("CHD-"), named
    # The decision the centre took has its report (made by the node's pass).
    expect(page.locator("table.reports tbody tr")).to_have_count(1, timeout=60_000)
    page.fill("form.case-note textarea", f"{named}: ЭКГ")
    page.click("form.case-note button[type=submit]")  # names the child: refused, saying so
    expect(page.locator("form.case-note [role=alert]")).to_be_visible()
    reader.read("case-partner-note-refused")
    page.fill("form.case-note textarea", "ЭКГ и сатурация 92 %")
    page.click("form.case-note button[type=submit]")
    expect(page.locator(".note")).to_have_count(1)
    reader.read("case-partner")
    # On a phone (390 CSS px): the page is as wide as the screen, tables scroll.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/cases", f"/cases/{mine}"):
        page.goto(reader.base + path)
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 391, (path, wide)
    reader.read("case-partner-phone")
    page.set_viewport_size({"width": 1400, "height": 900})
    for ref in others:  # a direct address of another hospital's case: not found
        answer = page.goto(f"{reader.base}/cases/{ref}")
        assert answer is not None and answer.status == 404
        reader.read("case-partner-other")


def node_series(node: Node, modality: str) -> str:
    return next(r["SeriesDescription"] for r in images(node) if r["Modality"] == modality)


def researcher_pages(reader: Reader, node: Node) -> None:
    page = reader.page
    reader.open("/", "studies-researcher")
    reader.open(f"/studies/{study_with(node, 'Calibration phantom')}", "study-researcher")
    page.goto(reader.base + "/exports")
    page.fill("#cohort input[name=modality]", "XA")
    page.click("#preview")
    expect(page.locator("#counts")).not_to_be_empty()
    page.fill("#cohort input[name=modality]", "MR")  # matches nothing: the job fails
    page.click("#start")
    expect(page.locator("#jobs .message").first).not_to_be_empty(timeout=60_000)
    counted = page.locator("#counts").inner_text()
    page.fill("#cohort input[name=date_from]", "2024")  # not a date: refused
    page.click("#preview")
    expect(page.locator("#counts")).not_to_have_text(counted)
    reader.read("exports")
    page.reload()
    reader.read("exports-reloaded")


def admin_pages(reader: Reader, node: Node) -> None:
    reader.open("/", "studies-admin")
    reader.open(f"/studies/{study_with(node, 'Calibration phantom')}", "study-admin")
    reader.open("/exports", "exports-admin")
    reader.open("/quarantine", "quarantine")
    reader.open("/forwarding", "forwarding")
    reader.open("/admin/audit", "audit")
    reader.open("/service", "service")


@pytest.mark.parametrize("language", ["ru", "zh"])
def test_every_page_reads_in_the_language_chosen(
    browser: Browser, node: Node, language: str
) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    texts: list[str] = []
    anonymous = Reader(browser, base, language, None)
    anonymous.open("/login", "login")
    anonymous.log_in("amina", "wrong password!")
    expect(anonymous.page.locator("[role=alert]")).to_be_visible()
    anonymous.read("login-refused")
    texts += anonymous.texts
    anonymous.close()
    for user, visit in (
        ("amina", cardiologist_pages),
        ("zarina", researcher_pages),
        ("bakyt", admin_pages),
        (PARTNER, partner_pages),
    ):
        reader = Reader(browser, base, language, user)
        visit(reader, node)
        texts += reader.texts
        reader.close()
    left = english_left(texts, data_values(node))
    # Each text with English in it once, with its words: what to translate.
    report = {}
    for word, where in sorted(left.items()):
        for text in where:
            report.setdefault(text, []).append(word)
    lines = [f"{' '.join(sorted(set(words)))}  <-  {text}" for text, words in report.items()]
    (ARTIFACTS / f"lang-{language}-english.txt").write_text("\n".join(lines) + "\n", "utf-8")
    assert not lines, f"{len(lines)} texts with English left:\n" + "\n".join(lines[:40])
