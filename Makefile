# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real DICOM peers the tests and benchmarks talk to, the browser the UI tests
# drive (Debian packages; Playwright never downloads a browser here), and
# PostgreSQL, which the tests start themselves (tests/postgres.py).
PEER_BINS := echoscu storescu findscu dcmsend dcmcjpeg dciodvfy Orthanc chromium tesseract gdcmscu \
	pdftotext
# orthanc-dicomweb: Orthanc as a DICOMweb client of the node; libgdcm-tools: gdcmscu;
# poppler-utils: the consultation report's PDF read as text and drawn as a page.
PEER_PKGS := dcmtk dicom3tools orthanc orthanc-dicomweb libgdcm-tools chromium postgresql \
	poppler-utils
# OCR that verifies cleaned pixels (dicomnode/deid/ocr.py): Tesseract's language
# data for the partners' scripts (the tesserocr wheel bundles libtesseract, so
# nothing is compiled) and the fonts tests/test_ocr.py renders burned-in text with.
OCR_PKGS := tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus tesseract-ocr-chi-sim \
	tesseract-ocr-kaz tesseract-ocr-tgk
# The fonts of the consultation reports (dicomnode/consult/pdf.py: Latin and
# Cyrillic, Chinese), which tests/test_ocr.py also renders burned-in text with.
FONT_PKGS := fonts-dejavu-core fonts-wqy-zenhei
FONT_FILES := /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
PEER_PKGS += $(OCR_PKGS) $(FONT_PKGS)
OCR_LANGS := eng rus chi_sim kaz tgk

.PHONY: install run demo ocr ohif test check peers lint bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

## make run: install, load the demo studies, start the node (DICOM 11112, web 8080)
run: $(STAMP) ocr ohif
	$(BIN)/dicomnode demo
	$(BIN)/dicomnode serve

demo: $(STAMP) ocr ohif
	$(BIN)/dicomnode demo

# Every image is read by OCR before it is stored: without Tesseract's language
# data the node would store nothing, the demo set included. The report fonts too.
ocr:
	@missing=0; for l in $(OCR_LANGS); do \
	  ls /usr/share/tesseract-ocr/*/tessdata/$$l.traineddata >/dev/null 2>&1 || missing=1; done; \
	for f in $(FONT_FILES); do [ -f $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing OCR language data and report fonts: $(OCR_PKGS) $(FONT_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    $(OCR_PKGS) $(FONT_PKGS); \
	fi

# The OHIF viewer v3 the node serves at /ohif/: the prebuilt @ohif/app from the
# npm registry, pinned (version and sha512 in viewer/ohif_install.py), unpacked
# into .ohif/<version>/ once (a stamp); no build, no npm install, nothing
# fetched at run time. npm itself is Debian's package.
ohif: $(STAMP)
	@command -v npm >/dev/null || { echo "installing npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	@$(BIN)/python -m viewer.ohif_install

peers:
	@missing=0; for b in $(PEER_BINS); do command -v $$b >/dev/null || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing=1; \
	for l in chi_sim kaz tgk; do ls /usr/share/tesseract-ocr/*/tessdata/$$l.traineddata >/dev/null 2>&1 || missing=1; done; \
	for f in $(FONT_FILES); do [ -f $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing DICOM peers: $(PEER_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(PEER_PKGS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make test: install test dependencies and peers, then the whole suite.
## Two workers: four on two cores took as long (about 20 minutes either
## way) and made the crash tests' random kills land before any store
test: $(STAMP) peers ohif lint
	$(BIN)/pytest -n 2

## make check: the fast tier while working (under two minutes on two cores):
## lint, then the tests not marked slow (over about a second each: PostgreSQL,
## subprocess runs, big fuzz passes) or peers (pyproject.toml's markers),
## stopping at the first failure; every module keeps a cheap test in it
check: $(STAMP) peers lint
	$(BIN)/pytest -q -x -n 2 -m "not slow and not peers"

## make fuzz: the ingest and web fuzzers for long (FUZZ_EXAMPLES mutated
## instances, and as many web requests through the app and as raw bytes
## through the server; random seed; `make test` runs short fixed passes)
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	FUZZ_LONG=1 FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:logging \
	  tests/test_fuzz.py tests/test_fuzz_web.py

## make bench: ingest against storescp and Orthanc; de-identification against
## deid, dicognito and Orthanc's /anonymize; frame delivery and C-MOVE /
## WADO-RS retrieval against Orthanc; research export against create-archive;
## C-FIND / QIDO-RS at 100,000 instances (SQLite, PostgreSQL, Orthanc); ingest
## into two node processes against one
bench: $(STAMP) peers
	@[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq orthanc-dicomweb
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.deid
	$(BIN)/python -m bench.viewer
	$(BIN)/python -m bench.retrieve
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.query
	$(BIN)/python -m bench.scaleout
	$(BIN)/python -m bench.stages

clean:
	rm -rf $(VENV) var bench/out .pytest_cache .ruff_cache .mypy_cache
