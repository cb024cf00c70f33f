"""``dicomnode tls`` (development certificates) and ``dicomnode audit`` (verify,
list, CSV): kept apart from cli.py, which holds the archive commands."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from dicomnode.config import Config
from storage.audit import AuditFilter
from storage.textsafe import escape_controls

EXIT_OK, EXIT_BROKEN = 0, 5


def add_parsers(commands: argparse._SubParsersAction) -> None:
    tls = commands.add_parser(
        "tls", help="make a development CA and certificates (PEM); show a fingerprint"
    )
    tls.add_argument("action", choices=["ca", "cert", "fingerprint"])
    tls.add_argument(
        "name", nargs="?", help="certificate common name (cert), PEM file (fingerprint)"
    )
    tls.add_argument("--dir", type=Path, default=Path("pki"), help="folder (default: ./pki)")
    tls.add_argument(
        "--host", action="append", default=[], help="subject alternative name (repeatable)"
    )
    tls.add_argument(
        "--no-loopback",
        dest="loopback",
        action="store_false",
        help="leave localhost and 127.0.0.1 out of the certificate's names",
    )
    audit = commands.add_parser("audit", help="verify, list or export the audit trail")
    audit.add_argument("action", choices=["verify", "list", "csv"])
    audit.add_argument("--user", default="")
    audit.add_argument("--event", default="")
    audit.add_argument("--from", dest="date_from", default="", metavar="YYYY-MM-DD")
    audit.add_argument("--to", dest="date_to", default="", metavar="YYYY-MM-DD")
    audit.add_argument("--failures", action="store_true", help="only failed outcomes")


def run_tls(args: argparse.Namespace) -> int:
    from dicomnode.certificates import identity_of_file
    from dicomnode.net.tls import make_ca, make_certificate, names_of

    if args.action == "ca":
        print(f"CA written: {make_ca(args.dir)} (key beside it, mode 0600)")
        return EXIT_OK
    if not args.name:
        what = "a PEM file" if args.action == "fingerprint" else "a common name"
        print(f"dicomnode tls {args.action}: {what} is needed", file=sys.stderr)
        return 2
    if args.action == "fingerprint":
        try:
            identity = identity_of_file(args.name)
        except (OSError, ValueError, IndexError):
            print(
                f"dicomnode tls fingerprint: {args.name} is not a PEM certificate", file=sys.stderr
            )
            return 2
        print(f'tls_subject = "{identity.subject}"\ntls_fingerprint = "{identity.fingerprint}"')
        return EXIT_OK
    if not (args.dir / "ca.key").exists():
        print(f"dicomnode tls cert: no CA in {args.dir} (run `dicomnode tls ca`)", file=sys.stderr)
        return 2
    try:
        path = make_certificate(args.dir, args.name, args.host, loopback=args.loopback)
    except ValueError as exc:
        print(f"dicomnode tls cert: {exc}", file=sys.stderr)
        return 2
    identity = identity_of_file(path)
    print(f"certificate written: {path} (names: {', '.join(names_of(path))})")
    print(f'tls_subject = "{identity.subject}"\ntls_fingerprint = "{identity.fingerprint}"')
    return EXIT_OK


def run_audit(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.node import open_archive

    archive = open_archive(config)
    trail = archive.index.audit
    try:
        if args.action == "verify":
            result = trail.verify()
            if result.ok:
                print(f"audit trail intact: {result.records} records")
                return EXIT_OK
            print(f"audit trail broken at record {result.first_bad}: {result.why}")
            return EXIT_BROKEN
        where = AuditFilter(
            user=args.user,
            event=args.event,
            failures_only=args.failures,
            date_from=args.date_from,
            date_to=args.date_to,
        )
        trail.record("audit-read", user=getpass.getuser(), source="cli", detail=args.action)
        if args.action == "csv":
            sys.stdout.writelines(trail.csv(where))
            return EXIT_OK
        for row in reversed(trail.rows(where)):
            line = (
                f"{row['seq']:>6} {row['at'][:19]} {row['event']:<21} {row['outcome']:>2} "
                f"{row['user']:<16} {row['source']:<15} {row['object']} {row['detail']}"
            )
            print(escape_controls(line))  # a typed name must not drive the terminal
        return EXIT_OK
    finally:
        archive.close()
