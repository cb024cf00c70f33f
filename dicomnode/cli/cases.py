"""``dicomnode case``: the referral cases (list, show, set a status, send the reports).

Kept apart from cli.main, which holds the archive commands. Each command
first lets the change feed open the cases of what was stored since the node
last looked (`storage.cases.Cases.drain`), so a list is current without a
running node.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime, timedelta

from dicomnode.config import Config
from storage.archive import Archive
from storage.cases import FIELDS, STATUSES, Case, CaseError, checked_detail
from storage.reports import UNSENT, Report
from storage.textsafe import escape_controls

EXIT_OK, EXIT_USAGE = 0, 2


def add_parsers(commands: argparse._SubParsersAction) -> None:
    case = commands.add_parser(
        "case", help="referral cases: list, show, set a status, send the reports again"
    )
    actions = case.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="cases, oldest referral first")
    listing.add_argument("--hospital", help="the referring hospital (its issuer)")
    listing.add_argument("--status", choices=list(STATUSES))
    listing.add_argument("--defect", help="a defect a plan of the case names (ASD, VSD, PDA)")
    listing.add_argument(
        "--waiting-days", type=int, metavar="N", help="referred at least N days ago"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one case: its studies and its history")
    show.add_argument("ref", help="the case reference (C-XXXX-XXXX)")
    status = actions.add_parser(
        "set",
        help="move a case to a status",
        description="Statuses and what each needs: "
        + "; ".join(
            f"{name}: {', '.join(required) or 'nothing'}"
            for name, (required, _) in STATUSES.items()
        ),
    )
    status.add_argument("ref", help="the case reference (C-XXXX-XXXX)")
    status.add_argument("status", choices=list(STATUSES))
    for detail in FIELDS:
        status.add_argument(f"--{detail}", default="")
    again = actions.add_parser(
        "send",
        help="send a case's unsent or undelivered reports now (after its hospital's "
        "[[remote_ae]] was mended)",
    )
    again.add_argument("ref", help="the case reference (C-XXXX-XXXX)")


def run(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.node import open_archive

    archive = open_archive(config)
    cases = archive.index.cases
    try:
        cases.drain()
        if args.action == "list":
            before = None
            if args.waiting_days is not None:
                before = datetime.now(UTC) - timedelta(days=args.waiting_days)
            found = cases.listing(
                hospital=args.hospital,
                status=args.status,
                defect=args.defect,
                opened_before=before,
            )
            for case in found:
                print(_json(case) if args.json else escape_controls(_line(case)))
            return EXIT_OK
        if args.action == "show":
            return _show(cases.get(args.ref), archive.index.reports.of_case(args.ref))
        if args.action == "send":
            return _send(config, archive, cases.get(args.ref))
        given = {name: getattr(args, name) for name in FIELDS if getattr(args, name)}
        # What is checked is what will be kept (hidden characters cleaned first).
        if kinds := _identifying(
            config, archive, cases.get(args.ref), checked_detail(args.status, given)
        ):
            print(
                f"dicomnode case set: the details give {', '.join(sorted(kinds))}: the case "
                "knows whose it is; write them without anything that identifies anyone",
                file=sys.stderr,
            )
            return EXIT_USAGE
        moved = cases.set_status(args.ref, args.status, given, user=getpass.getuser(), source="cli")
        print(escape_controls(_line(moved)))
        return EXIT_OK
    except CaseError as exc:
        print(f"dicomnode case {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        archive.close()


def _identifying(config: Config, archive: Archive, case: Case, given: dict[str, str]) -> set[str]:
    """What identifies someone in the details, as the web checks them."""
    from dicomnode.consult.identity import CHECKED, identifying

    texts = (given.get(n, "") for n in CHECKED)
    return identifying(config, archive.index, case, texts, need_key=False)


def _line(case: Case) -> str:
    waited = (datetime.now(UTC) - case.opened_at).days
    flag = " (new imaging since the decision)" if case.new_imaging else ""
    detail = "; ".join(f"{k}: {v}" for k, v in sorted(case.detail.items()))
    return (
        f"{case.ref}  {case.status:<13} {case.opened_at:%Y-%m-%d} ({waited} d)  "
        f"{case.issuer}  {case.pseudonym}  studies {case.study_count}{flag}"
        + (f"  {detail}" if detail else "")
    )


def _json(case: Case) -> str:
    return json.dumps(
        {
            "ref": case.ref,
            "hospital": case.issuer,
            "patient": case.pseudonym,
            "status": case.status,
            "detail": case.detail,
            "opened": case.opened_at.isoformat(),
            "updated": case.updated_at.isoformat(),
            "updated_by": case.updated_by,
            "studies": case.study_count,
            "new_imaging": case.new_imaging,
        },
        ensure_ascii=False,
    )


def _show(case: Case, reports: list[Report]) -> int:
    print(escape_controls(_line(case)))
    for uid in case.studies:
        print(f"  study {uid}")
    for event in case.history:
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(event["detail"].items()))
        line = f"  {event['at']:%Y-%m-%d %H:%M} {event['user']:<16} {event['status']} {detail}"
        print(escape_controls(line.rstrip()))
    for note in case.notes:
        text = " / ".join(note["text"].splitlines())
        print(escape_controls(f"  note {note['at']:%Y-%m-%d %H:%M} {note['user']}: {text}"))
    for report in reports:
        print(
            escape_controls(
                f"  report {report.created_at:%Y-%m-%d %H:%M} "
                f"{report.content.get('status', '')}: {_standing(report)}"
            )
        )
    return EXIT_OK


def _standing(report: Report) -> str:
    if report.state == UNSENT:
        return f"not sent ({report.reason})"
    if report.delivered:
        return f"delivered to {report.destination}"
    errors = sorted({s.last_error for s in report.sent if s.state != "done" and s.last_error})
    return f"waiting for {report.destination}" + (f" ({'; '.join(errors)})" if errors else "")


def _send(config: Config, archive: Archive, case: Case) -> int:
    """Queue the case's reports that did not reach the hospital, to the AE
    its configuration names now."""
    from dicomnode.consult.making import destination

    remote, why = destination(config, case.issuer)
    if remote is None:
        print(f"dicomnode case send: {why}", file=sys.stderr)
        return EXIT_USAGE
    waiting = [r for r in archive.index.reports.of_case(case.ref) if not r.delivered and r.uids]
    queued = sum(archive.index.reports.send(r.pk, remote.ae_title) for r in waiting)
    print(f"{case.ref}: {queued} instances of {len(waiting)} reports queued for {remote.ae_title}")
    if waiting and not queued:
        print("  (already waiting; `dicomnode case show` says why each waits)")
    return EXIT_OK
