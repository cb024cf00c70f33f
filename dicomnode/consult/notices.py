"""Telling a hospital by e-mail that one of its cases moved, naming no one.

A pass of the node's runner: each move of a case (its history row) is told
once, to the addresses of the hospital's `notify_emails`, through the
configured SMTP relay, in the hospital's report language. The message
carries the case reference, its new status and a link to the case page,
nothing else: no name, no ID, no details (free text), no hospital number,
so a mail server or an inbox learns nothing of the child. A move with no
relay or no address is marked told; a relay that fails gets the move back,
and the next pass tries again.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from dicomnode.config import Config
from dicomnode.consult.words import STATUSES, say
from storage.index import Index

log = logging.getLogger(__name__)
TIMEOUT = 20.0  # seconds for the relay to answer


def message(config: Config, ref: str, status: str, language: str, to: list[str]) -> EmailMessage:
    """The mail of one move of case ``ref``."""
    link = f"{config.web_address.rstrip('/')}/cases/{ref}" if config.web_address else ""
    title = say(language, status) if status in STATUSES else status
    mail = EmailMessage()
    mail["From"] = config.smtp_sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = say(language, "mail_subject", ref=ref, status=title)
    mail.set_content(say(language, "mail_body", ref=ref, status=title, link=link))
    return mail


class Notices:
    def __init__(self, config: Config, index: Index) -> None:
        self.config, self.index = config, index

    def run_once(self) -> int:
        """Tell what moved since the last pass; how many messages went."""
        sent = 0
        cases = self.index.cases
        for move in cases.untold():
            remotes = [r for r in self.config.remote_aes if r.issuer == move["issuer"]]
            to = sorted({a for r in remotes for a in r.notify_emails})
            if not cases.claim_telling(move["pk"]):
                continue  # another process tells it
            if not self.config.smtp_relay or not to:
                continue  # nobody to tell: told
            language = next(
                (r.language for r in remotes if r.receives_reports), remotes[0].language
            )
            mail = message(self.config, move["ref"], move["status"], language, to)
            try:
                self._send(mail)
            except (OSError, smtplib.SMTPException) as exc:
                cases.claim_telling(move["pk"], undo=True)
                log.warning("case notifications wait: the relay answered %s", type(exc).__name__)
                break  # the relay is down: the rest wait for the next pass
            sent += 1
        return sent

    def _send(self, mail: EmailMessage) -> None:
        host, _, port = (
            self.config.smtp_relay.rpartition(":")
            if ":" in self.config.smtp_relay
            else (self.config.smtp_relay, "", "25")
        )
        with smtplib.SMTP(host, int(port), timeout=TIMEOUT) as relay:
            relay.send_message(mail)
