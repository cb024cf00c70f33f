"""Logging that never carries patient data.

pydicom quotes the offending value when it warns about a malformed element,
pynetdicom logs whole C-FIND identifiers, werkzeug logs URLs and botocore
logs whole requests at DEBUG; all are silenced here, and SQL errors are
raised without their parameters. pynetdicom's warnings about a
non-conformant or invalid value ("Non-conformant 'Affected SOP Instance
UID' value '1.2.643.0007150003…'") are kept, with the value withheld: a
sender's UID may embed an MRN and a birth date. The node's own log lines
name instances only by `ingest.reference_of`.

Every record is one line: a sender's text (an AE title, a login name, a
request path) with a line break or an escape sequence would otherwise forge
a line of the log or rewrite an operator's terminal. Control characters in
the message, arguments included, are written as escapes (``\\n``, ``\\x1b``)
for every logger, pynetdicom's too; a traceback keeps its lines, each
indented, so a line that starts at the left margin always begins a record.

Python warnings go through the same logger (``logging.captureWarnings``):
a library's warning written straight to standard error would bypass both
rules. Its text is never logged, only its category and where it was raised:
pydicom warns with the value it could not read ("Unknown encoding '…'" with
a sender's Specific Character Set, "Invalid value for VR …" with a name),
and a warning's text cannot be told apart from a value. pydicom's own log
records are withheld the same way.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePath
from typing import TextIO

import pydicom.config
import pynetdicom
from pynetdicom import _config as pynetdicom_config

from storage.textsafe import escape_controls

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With several receiving processes their lines interleave: each says whose.
FORMAT_WITH_PID = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

# pynetdicom quotes a value after the word "value" (set_uid, set_ae, and
# the validators), in messages formatted before they reach the logger.
_QUOTED_VALUE = re.compile(r"\bvalue '[^']*'")
WITHHELD = "value (withheld)"


class WithheldValues(logging.Filter):
    """Rewrites a record that quotes a value so that the warning stays (a
    sender with non-conformant UIDs is worth knowing about) and the value
    goes. A filter on a logger sees only that logger's own records, so it is
    put on every pynetdicom logger (`quiet_libraries`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        withheld = _QUOTED_VALUE.sub(WITHHELD, message)
        if withheld != message:
            record.msg, record.args = withheld, ()
        return True


_WITHHELD_VALUES = WithheldValues()

# What logging.captureWarnings logs: warnings.formatwarning's
# "file:line: Category: text" (then the source line).
_WARNING = re.compile(r"(?P<file>[^\n]*?):(?P<line>\d+): (?P<category>[A-Za-z_]\w*): ")
_SAFE_NAME = re.compile(r"[^\w.-]")
WARNING_WITHHELD = "%s at %s (text withheld: it may quote a value)"
LIBRARY_WITHHELD = "%s message withheld (it may quote a value)"


class WithheldText(logging.Filter):
    """Replaces the text of a record that may quote a sender's value with a
    fixed one: a captured warning keeps its category and where it was
    raised, a library's record its logger and level. Put on the
    ``py.warnings`` and ``pydicom`` loggers (`quiet_libraries`) and on the
    node's handler (`setup`), which also sees records of loggers created
    after the filters were put on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in (WARNING_WITHHELD, LIBRARY_WITHHELD):
            return True  # by the logger's filter, now at the handler's
        if record.name == "py.warnings":
            # captureWarnings logs ("%s", text); a record with mapping args
            # (``log.warning("%(x)s", {...})``) has no first argument.
            args = record.args
            text = str(args[0]) if isinstance(args, tuple) and args else str(record.msg)
            match = _WARNING.match(text)
            category = match["category"] if match else "Warning"
            where = (
                f"{_SAFE_NAME.sub('?', PurePath(match['file']).name)}:{match['line']}"
                if match
                else "unknown place"
            )
            record.msg, record.args = WARNING_WITHHELD, (category, where)
        elif record.name == "pydicom" or record.name.startswith("pydicom."):
            record.msg, record.args = LIBRARY_WITHHELD, (record.name,)
        else:
            return True
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


_WITHHELD_TEXT = WithheldText()


def _withhold_values(prefix: str, withheld: logging.Filter = _WITHHELD_VALUES) -> None:
    """The filter on ``prefix``'s logger and every logger below it."""
    names = [prefix] + [
        name for name in logging.Logger.manager.loggerDict if name.startswith(prefix + ".")
    ]
    for name in names:
        logger = logging.getLogger(name)
        if withheld not in logger.filters:
            logger.addFilter(withheld)


def quiet_libraries() -> None:
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _withhold_values("pydicom", _WITHHELD_TEXT)
    # Warnings (pydicom's quote values) to the log, one line and text withheld.
    logging.captureWarnings(True)
    _withhold_values("py.warnings", _WITHHELD_TEXT)
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    _withhold_values(pynetdicom.__name__)
    # The DUL logs a traceback for every malformed or cut-off PDU (junk from
    # port scanners); dicomnode.dimse.transport logs one line for what it refuses.
    logging.getLogger("pynetdicom.dul").setLevel(logging.CRITICAL)
    # The JPEG 2000 codec logs every tile it encodes.
    logging.getLogger("openjpeg").setLevel(logging.WARNING)
    # Werkzeug logs every request line, URL and query string included.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # boto3/botocore at DEBUG log whole requests (headers, signed URLs);
    # Alembic announces each migration step at INFO, which is worth keeping.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


class OneLineRecord(logging.LogRecord):
    """A record whose message (``msg % args``) has its controls escaped,
    whichever handler or formatter reads it: installed as the record
    factory, so no logger of any library is left out."""

    def getMessage(self) -> str:
        return escape_controls(super().getMessage())


class OneLineFormatter(logging.Formatter):
    """The node's format, one line per message whatever made the record; an
    exception's or stack's lines (Python's, but quoting the exception's
    message) are escaped and indented, never at the left margin."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # Not record.exc_text: another handler may have cached it unescaped.
        parts = [self.formatException(record.exc_info)] if record.exc_info else []
        if not parts and record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join([text, *(_indented(part) for part in parts)])


def _indented(block: str) -> str:
    return "\n".join("  " + escape_controls(line) for line in block.rstrip("\n").split("\n"))


def setup(
    level: str, stream: TextIO | None = None, *, with_pid: bool = False
) -> logging.Handler | None:
    """The node's log on ``stream`` (standard error): one handler on the
    root logger (a second call replaces it), records one line each. Like
    `logging.basicConfig`, a root logger someone else gave handlers (a test
    runner, a program embedding the node) keeps them and its level, unless
    a ``stream`` is asked for; their records are made one line all the same."""
    if logging.getLogRecordFactory() is logging.LogRecord:
        logging.setLogRecordFactory(OneLineRecord)
    quiet_libraries()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, OneLineFormatter)]:
        root.removeHandler(old)
    if stream is None and root.handlers:
        return None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(FORMAT_WITH_PID if with_pid else FORMAT))
    handler.addFilter(_WITHHELD_TEXT)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
