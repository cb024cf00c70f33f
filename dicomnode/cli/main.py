"""The ``dicomnode`` command: serve, import, stats, config, demo."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import signal
import sys
from pathlib import Path

from dicomnode import __version__, logs
from dicomnode.cli import cases as cli_cases
from dicomnode.cli import security as cli_security
from dicomnode.config import Config, ConfigError, load, to_toml, without_secrets
from dicomnode.deid.secret import KeyFileError
from storage.accounts import ROLES
from storage.private import private_umask
from storage.textsafe import escape_controls
from storage.values import normalise_issuer

EXIT_OK, EXIT_USAGE, EXIT_REJECTED, EXIT_CONFIG = 0, 2, 3, 4
EXIT_DAMAGED = 6  # `dicomnode check` found missing, damaged or orphan files (5: audit broken)


def _issuer(text: str) -> str:
    """``--issuer`` as every door stores it: "NCC Bishkek " and "NCC  Bishkek"
    are one hospital, so one child gets one pseudonym."""
    issuer = normalise_issuer(text)
    if not issuer:
        raise argparse.ArgumentTypeError("the hospital's name is needed")
    return issuer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomnode",
        description=(
            "CHD imaging exchange node: receives DICOM studies from partner "
            "hospitals, stores them and answers queries."
        ),
        epilog="Configuration: dicomnode.toml (see `dicomnode config`) and "
        "DICOMNODE_<KEY> environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML file (default: $DICOMNODE_CONFIG or ./dicomnode.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the DICOM service and the web app until stopped")
    # One of the other receiving processes `serve` starts (`receivers`).
    serve.add_argument("--receiver", type=int, metavar="PID", help=argparse.SUPPRESS)

    imp = commands.add_parser(
        "import", help="store DICOM files and folders (recursively) through the ingest pipeline"
    )
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument(
        "--issuer",
        help="who assigned the PatientIDs in these files (default: IMPORT)",
        default="IMPORT",
        type=_issuer,
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")

    stats = commands.add_parser("stats", help="counts of patients, studies, series, instances")
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("config", help="print the effective configuration as TOML")

    demo = commands.add_parser("demo", help="import the demo echo and angio studies")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    reid = commands.add_parser(
        "reidentify",
        help="show who a pseudonym or study is at the sending hospital (needs linkage.key; "
        "audited)",
    )
    reid.add_argument("value", metavar="PSEUDONYM|STUDY_UID")

    send = commands.add_parser(
        "send", help="queue a study for a known remote AE (the running node sends it)"
    )
    send.add_argument("study", metavar="STUDY_UID")
    send.add_argument("destination", metavar="AE")
    commands.add_parser("queue", help="the forwarding queue: pending and done per destination")

    user = commands.add_parser("user", help="web users: add, list, disable, passwd, issuer, sees")
    user.add_argument("action", choices=["add", "list", "disable", "passwd", "issuer", "sees"])
    user.add_argument("name", nargs="?", help="user name (all but list)")
    user.add_argument("--role", choices=list(ROLES), default="cardiologist")
    user.add_argument(
        "--issuer",
        help="the account's hospital, as the issuer of its [[remote_ae]] devices "
        '(needed to upload by STOW-RS; with `issuer`, "" removes it)',
    )
    user.add_argument(
        "--sees",
        metavar="ISSUERS|*",
        help="whose patients the account sees: hospitals (issuers), comma-separated, or * for "
        "all (with add: default its own --issuer, all without one; with `sees`: the new scope)",
    )
    user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input, e.g. piped from a secret store "
        "(needed without a terminal; a password is never an argument)",
    )

    held = commands.add_parser(
        "quarantine", help="instances held back: list, show, release, refuse (audited)"
    )
    actions = held.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="held instances: when, from whom, what kind, why")
    show = actions.add_parser("show", help="write one held instance, decrypted, for review")
    show.add_argument("uids", nargs=1, metavar="SOP_UID")
    show.add_argument("--out", type=Path, required=True, metavar="FILE", help="new file (0600)")
    release = actions.add_parser(
        "release", help="store held instances now clean by today's rules, or --reviewed"
    )
    release.add_argument("uids", nargs="*", metavar="SOP_UID", help="only these (default: all)")
    release.add_argument(
        "--reviewed",
        action="store_true",
        help="store the instances named as they are held: you reviewed each one",
    )
    refuse = actions.add_parser("refuse", help="delete held instances for good")
    refuse.add_argument("uids", nargs="+", metavar="SOP_UID")
    refuse.add_argument("--why", required=True, metavar="TEXT", help="the reason (audited)")
    exp = commands.add_parser(
        "export", help="a research cohort as a ZIP (DICOMDIR, manifest) re-pseudonymised for it"
    )
    exp.add_argument("--out", type=Path, metavar="FILE.zip", help="required unless --preview")
    exp.add_argument("--modality", default="", help="e.g. US or XA")
    exp.add_argument("--hospital", default="", help="issuer (sending hospital) of the studies")
    exp.add_argument("--sex", default="", choices=["", "F", "M", "O"])
    exp.add_argument("--from", dest="date_from", default="", metavar="YYYYMMDD")
    exp.add_argument("--to", dest="date_to", default="", metavar="YYYYMMDD")
    exp.add_argument("--defect", default="", help="defect on the latest worksheet, e.g. PDA")
    exp.add_argument("--device", default="", help="a proposed device size, e.g. 8/6")
    exp.add_argument("--age-from", type=float, metavar="YEARS")
    exp.add_argument("--age-to", type=float, metavar="YEARS")
    exp.add_argument(
        "--linkable",
        action="store_true",
        help="pseudonyms and UIDs shared with other linkable exports (key_dir/export.key)",
    )
    exp.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole export if any instance fails the identity checks "
        "(default: leave it out and say so)",
    )
    exp.add_argument(
        "--preview", action="store_true", help="print what would be exported; write nothing"
    )
    exp.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = commands.add_parser(
        "check", help="read every stored instance: missing, damaged and orphan files"
    )
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    save = commands.add_parser("backup", help="copy the index and/or the key files to a folder")
    save.add_argument("--out", type=Path, required=True, metavar="FOLDER")
    save.add_argument("--only", choices=["index", "keys"], help="one part (store them apart)")
    back = commands.add_parser("restore", help="put an index and keys backup back")
    back.add_argument("source", type=Path, metavar="FOLDER")
    back.add_argument("--force", action="store_true", help="replace files that differ")
    cli_security.add_parsers(commands)
    cli_cases.add_parsers(commands)
    return parser


def _backup(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.ops.backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            parts = (args.only,) if args.only else ("index", "keys")
            files = backup(config, args.out, parts)
        else:
            files = restore(config, args.source, force=args.force)
    except BackupError as exc:
        print(f"dicomnode {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.command}: {', '.join(files)}")
    return EXIT_OK


def _check(config: Config, progress: bool) -> int:
    from tqdm import tqdm

    from dicomnode.node import open_archive
    from dicomnode.ops.check import verify

    archive = open_archive(config)
    bar = tqdm(unit="inst", disable=not progress, file=sys.stderr)

    def step(done: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    try:
        report = verify(archive, step)
    finally:
        bar.close()
        archive.close()
    for uid in report.missing:
        print(f"missing: {uid}")
    for uid, why in report.damaged:
        print(f"damaged: {uid}: {why}")
    for key in report.orphans:
        print(f"orphan file: {key}")
    print(report.summary())
    return EXIT_OK if report.clean else EXIT_DAMAGED


def _export(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.jobs.export import (
        Cohort,
        EmptyCohort,
        ExportBlocked,
        export,
        left_out_summary,
        preview,
    )
    from dicomnode.node import open_archive

    cohort = Cohort(
        args.modality,
        args.hospital,
        args.sex,
        args.date_from,
        args.date_to,
        args.defect,
        args.device,
        args.age_from,
        args.age_to,
    )
    problem = None
    if not args.preview and args.out is None:
        problem = "--out FILE.zip is needed (or --preview)"
    elif not args.preview and args.out.exists():
        problem = f"{args.out} exists; not overwriting it"
    if problem:
        print(f"dicomnode export: {problem}", file=sys.stderr)
        return EXIT_USAGE
    archive = open_archive(config)
    try:
        if args.preview:
            counts = preview(archive, cohort)
            print(
                f"patients {counts.patients}, studies {counts.studies}, series {counts.series}, "
                f"instances {counts.instances}, {counts.bytes / 1e6:.1f} MB"
            )
            return EXIT_OK
        result = export(
            config,
            archive,
            cohort,
            args.out,
            progress=not args.no_progress,
            linkable=args.linkable,
            strict=args.strict,
        )
    except ExportBlocked as exc:
        print(f"dicomnode export: blocked, nothing written: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except EmptyCohort as exc:
        print(f"dicomnode export: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    finally:
        archive.close()
    for uid, reason in result.left_out:
        print(f"left out {uid}: {reason}", file=sys.stderr)
    print(
        f"{result.studies} studies, {result.instances} instances, "
        f"{result.bytes} bytes -> {args.out}"
        + (f"; {left_out_summary(result.left_out)}" if result.left_out else "")
    )
    return EXIT_OK


def _serve(config: Config, receiver: int | None = None, argv: list[str] | None = None) -> int:
    from dicomnode.cli.receivers import Receivers, die_with_parent, shared
    from dicomnode.node import Node

    # Block the stop signals before any thread starts, so every thread inherits
    # the mask and the main thread alone receives them in sigwait().
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    config = shared(config)  # this process's share of the caps
    if receiver is not None:
        die_with_parent(receiver)
        node = Node(config, web=False, first=False).start()
        try:
            signal.sigwait(stop_signals)
        finally:
            node.stop()
        return EXIT_OK
    node = Node(config).start()
    others = None
    if config.receiving_processes > 1:
        others = Receivers(config, node.dicom.port, argv or sys.argv[1:]).start()
    print(
        f"dicomnode: {config.ae_title} on DICOM port {node.dicom.port}, "
        f"web http://{config.http_host}:{node.http_port}/ ; data in {config.data_dir}"
        + (f"; {config.receiving_processes} receiving processes" if others else ""),
        flush=True,
    )
    try:
        signal.sigwait(stop_signals)
    finally:
        if others is not None:
            others.stop()
        node.stop()
    return EXIT_OK


def _import(config: Config, paths: list[Path], issuer: str, progress: bool) -> int:
    from dicomnode.ingest.importer import import_paths
    from dicomnode.ingest.pipeline import Ingestor
    from dicomnode.node import open_archive

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"dicomnode import: {missing[0]} does not exist", file=sys.stderr)
        return EXIT_USAGE
    archive = open_archive(config)
    # Nobody waits on an import: OCR reads before storing, so the summary
    # says what was held (no verifier need run later).
    offline = dataclasses.replace(config, ocr_deferred=False)
    try:
        summary = import_paths(Ingestor(offline, archive), paths, issuer=issuer, progress=progress)
    finally:
        archive.close()
    for path, reason in summary.rejected:
        print(f"rejected {path}: {reason}", file=sys.stderr)
    print(summary.line())
    return EXIT_REJECTED if summary.rejected else EXIT_OK


def _stats(config: Config, as_json: bool) -> int:
    from dicomnode.node import open_archive

    archive = open_archive(config)
    try:
        stats = archive.index.stats()
    finally:
        archive.close()
    if as_json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    for key in ("patients", "studies", "series", "instances"):
        print(f"{key:>10}: {stats[key]}")
    print(f"{'size':>10}: {stats['bytes'] / 1e6:.1f} MB")
    print(f"{'re-sent':>10}: {stats['duplicates_received']} duplicate instances received")
    waiting = stats["awaiting_ocr"]
    print(f"{'held':>10}: {stats['held']} instances ({waiting} of them awaiting OCR)")
    for modality, count in sorted(stats["modalities"].items(), key=lambda kv: str(kv[0])):
        print(escape_controls(f"{modality or '?':>10}: {count} instances"))
    return EXIT_OK


def _forward(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.jobs.forwarding import Forwarder, ForwardError
    from dicomnode.node import open_archive

    archive = open_archive(config)
    try:
        forwarder = Forwarder(config, archive)
        if args.command == "send":
            try:
                queued = forwarder.enqueue_study(args.study, args.destination)
            except ForwardError as exc:
                print(f"dicomnode send: {exc}", file=sys.stderr)
                return EXIT_REJECTED
            # Only queued: the running node sends (its leases, its routes, its
            # feed cursor); a command must not forward beside it.
            print(
                f"{queued} queued for {args.destination}; the running node sends them "
                "(dicomnode queue shows progress)"
            )
            return EXIT_OK
        for (destination, state), count in sorted(archive.index.forwarding.counts().items()):
            print(f"{destination:<16} {state:<8} {count}")
    finally:
        archive.close()
    return EXIT_OK


def _demo_user(config: Config) -> None:
    """A first web account, so `make run` can be tried: random password, shown once."""
    import secrets

    from werkzeug.security import generate_password_hash

    from dicomnode.node import open_archive
    from storage.accounts import ALL

    archive = open_archive(config)
    try:
        if not archive.index.accounts.list():
            password = secrets.token_urlsafe(12)
            # The demo studies' hospital, so the account can upload by STOW-RS too.
            # It administers the whole node: it sees every hospital's patients.
            archive.index.accounts.add(
                "demo", generate_password_hash(password), "admin", "DEMO", sees=ALL
            )
            print(f"web login: demo / {password}  (change it: dicomnode user passwd demo)")
    finally:
        archive.close()


PASSWORD_MAX = 1024  # characters read from a pipe: a password, not a file


class PasswordInputError(Exception):
    """No password could be read (no terminal, nothing piped): a usage error."""


def _read_password(from_stdin: bool) -> str:
    """Asked twice at a terminal (not echoed), or piped with --password-stdin
    as `docker login` takes it; never an argument, which `ps` and the shell's
    history would show."""
    terminal = sys.stdin is not None and sys.stdin.isatty()
    if from_stdin and not terminal:
        try:
            text = sys.stdin.read(PASSWORD_MAX + 2) if sys.stdin else ""
        except UnicodeDecodeError:
            raise PasswordInputError("--password-stdin: standard input is not text") from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise PasswordInputError("--password-stdin: no password on standard input")
        if "\n" in password or "\r" in password:
            raise PasswordInputError("--password-stdin: standard input holds more than one line")
        if len(password) > PASSWORD_MAX:
            raise PasswordInputError(f"--password-stdin: more than {PASSWORD_MAX} characters")
        return password
    if not terminal:
        raise PasswordInputError(
            "no terminal to ask for the password; pipe it in with --password-stdin"
        )
    try:
        first = getpass.getpass("Password: ")
        if from_stdin:  # typed at a terminal: once, as for a piped one
            return first
        if first != getpass.getpass("Again: "):
            raise PasswordInputError("the two passwords differ")
    except EOFError:
        raise PasswordInputError("no password given") from None
    return first


def _warn_unknown_issuer(config: Config, issuer: str) -> None:
    """An issuer no [[remote_ae]] has: that hospital's DICOM sends and this
    account's uploads would make two patients of one child."""
    known = sorted({remote.issuer for remote in config.remote_aes})
    if known and issuer not in known:
        print(
            f"dicomnode user: note: no [[remote_ae]] has issuer {issuer!r}; its patients "
            f"meet that hospital's DICOM sends only under the same issuer "
            f"(configured: {', '.join(repr(k) for k in known)})",
            file=sys.stderr,
        )


def _scope_text(sees: frozenset[str] | list[str] | None) -> str:
    """An account's scope as `user list` and the audit trail show it."""
    return "all" if sees is None else ", ".join(repr(i) for i in sorted(sees))


def _user(config: Config, args: argparse.Namespace) -> int:
    from werkzeug.security import generate_password_hash

    from dicomnode.node import open_archive
    from storage.accounts import OWN, AccountError, checked_issuer, password_problem

    problem = None
    sees: list[str] | None = None
    if args.sees is not None and args.sees.strip() != "*":
        sees = [part.strip() for part in args.sees.split(",") if part.strip()]
    if args.action != "list" and not args.name:
        problem = "a user name is needed"
    elif args.action == "issuer" and args.issuer is None:
        problem = 'the hospital is needed: --issuer "Hospital name" (or "" to remove it)'
    elif args.issuer is not None and args.action not in ("add", "issuer"):
        problem = "--issuer is for add and issuer"
    elif args.action == "sees" and args.sees is None:
        problem = 'whose patients? --sees "Hospital A, Hospital B" (or "*" for all)'
    elif args.sees is not None and args.action not in ("add", "sees"):
        problem = "--sees is for add and sees"
    elif sees == []:
        problem = '--sees: name at least one hospital (or "*" for all)'
    password = ""
    if not problem and args.action in ("add", "passwd"):
        try:  # before the archive is opened: nothing to undo when it fails
            password = _read_password(args.password_stdin)
        except PasswordInputError as exc:
            problem = str(exc)
    if problem:
        print(f"dicomnode user {args.action}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    archive = open_archive(config)
    accounts = archive.index.accounts
    try:
        detail = args.action
        if args.action == "list":
            for user in accounts.list():
                state = "disabled" if user.disabled else "active"
                scope = "*" if user.sees is None else ", ".join(sorted(user.sees))
                print(
                    f"{user.username:<24} {user.role:<13} {state:<9} {user.issuer or '-'}"
                    f"  sees {scope}"
                )
        elif args.action == "disable":
            accounts.update(args.name, disabled=True)
        elif args.action == "issuer":
            issuer = checked_issuer(args.issuer)
            accounts.update(args.name, issuer=issuer)
            detail = f"issuer {issuer!r}" if issuer else "issuer removed"
            seen = getattr(accounts.get(args.name), "sees", None)
            if issuer and seen is not None and issuer not in seen:
                print(
                    f"dicomnode user: note: {args.name} still sees {_scope_text(seen)} only; "
                    f'change it with: dicomnode user sees {args.name} --sees "..."',
                    file=sys.stderr,
                )
        elif args.action == "sees":
            accounts.update(args.name, sees=sees)
            detail = f"sees {_scope_text(accounts.get(args.name).sees)}"  # type: ignore[union-attr]
        else:
            issuer = checked_issuer(args.issuer)
            if problem := password_problem(password, args.name, config.password_min_length):
                raise ValueError(problem)
            hashed = generate_password_hash(password)
            if args.action == "add":
                accounts.add(
                    args.name, hashed, args.role, issuer, OWN if args.sees is None else sees
                )
                detail = f"add, role {args.role}" + (f", issuer {issuer!r}" if issuer else "")
                if args.sees is not None:  # else the default, which the issuer says
                    detail += f", sees {_scope_text(accounts.get(args.name).sees)}"  # type: ignore[union-attr]
            else:
                accounts.update(args.name, password_hash=hashed, disabled=False)
        if args.action != "list":
            archive.index.audit.record(
                "user-change",
                user=getpass.getuser(),
                source="cli",
                obj=args.name,
                detail=detail,
            )
        if args.action in ("add", "issuer") and args.issuer:
            _warn_unknown_issuer(config, normalise_issuer(args.issuer))
        for named in sees or ():
            _warn_unknown_issuer(config, normalise_issuer(named))
    except (AccountError, ValueError) as exc:
        print(f"dicomnode user {args.action}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    finally:
        archive.close()
    return EXIT_OK


def _reidentify(config: Config, value: str) -> int:
    from dicomnode.deid.linkage import LinkageError
    from dicomnode.node import open_archive
    from dicomnode.ops.admin import AdminError, reidentify

    archive = open_archive(config)
    try:
        for identity in reidentify(config, archive, value):
            print(json.dumps(identity, ensure_ascii=False))
    except (AdminError, LinkageError) as exc:
        print(f"dicomnode reidentify: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    finally:
        archive.close()
    return EXIT_OK


def _quarantine(config: Config, args: argparse.Namespace) -> int:
    """list, show, release, refuse: one line per instance; 3 if one named failed."""
    from pydicom.uid import UID

    from dicomnode.node import open_archive
    from dicomnode.ops.admin import (
        AdminError,
        refuse_quarantined,
        release_quarantined,
        show_quarantined,
    )

    uids: list[str] = getattr(args, "uids", [])
    problem = None
    if args.action == "show" and args.out.exists():
        problem = f"{args.out} exists; not overwriting it"
    elif args.action == "refuse" and not args.why.strip():
        problem = "--why TEXT: the reason goes into the audit trail"
    elif args.action == "release" and args.reviewed and not uids:
        problem = "--reviewed releases only the SOP_UIDs named, each one reviewed"
    if problem:
        print(f"dicomnode quarantine {args.action}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    archive = open_archive(config)
    try:
        if args.action == "list":
            for held in archive.index.quarantined():
                kind = UID(held["sopclassuid"]).name if held["sopclassuid"] else "?"
                line = (
                    f"{held['received_at']:%Y-%m-%d %H:%M} "
                    f"{held['sending_ae'] or '(import)':<16} {held['pseudonym']} "
                    f"{held['sopinstanceuid']} "
                    f"{kind} ({held['modality'] or '?'}): {held['reason']}"
                )
                print(escape_controls(line))  # the modality is the sender's text
            return EXIT_OK
        if args.action == "show":
            size = show_quarantined(archive, uids[0], args.out)
            print(f"shown {uids[0]}: {size} bytes to {args.out}")
            return EXIT_OK
        if args.action == "refuse":
            outcomes = refuse_quarantined(archive, uids, args.why)
            verb = "refused"
        else:
            outcomes = release_quarantined(config, archive, uids, reviewed=args.reviewed)
            verb = "released"
    except AdminError as exc:
        print(f"dicomnode quarantine {args.action}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    finally:
        archive.close()
    for outcome in outcomes:
        print(f"{verb if outcome.done else 'not ' + verb} {outcome.uid}: {outcome.note}")
    done = sum(outcome.done for outcome in outcomes)
    print(f"{done} {verb}, {len(outcomes) - done} not")
    # Instances named and not done are a failure; a pass over all is not.
    return EXIT_REJECTED if uids and done < len(outcomes) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `serve` passes on
    if args.command == "tls":
        # Certificates are made before the configuration that names them can
        # be valid (mutual TLS needs every entry's fingerprint): no config.
        with private_umask():
            return cli_security.run_tls(args)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"dicomnode: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(config.log_level, with_pid=config.receiving_processes > 1)
    try:
        # Whatever a command creates (index, keys, exports, backups) is the
        # node user's alone, also where no explicit mode is given.
        with private_umask():
            return _run(args, config)
    except KeyFileError as exc:
        print(f"dicomnode: key error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "config":
        sys.stdout.write(to_toml(without_secrets(config)))
        return EXIT_OK
    if args.command == "serve":
        return _serve(config, args.receiver, args.argv)
    if args.command == "import":
        return _import(config, args.paths, args.issuer, not args.no_progress)
    if args.command == "stats":
        return _stats(config, args.json)
    if args.command in ("send", "queue"):
        return _forward(config, args)
    if args.command == "user":
        return _user(config, args)
    if args.command == "reidentify":
        return _reidentify(config, args.value)
    if args.command == "quarantine":
        return _quarantine(config, args)
    if args.command == "export":
        return _export(config, args)
    if args.command in ("backup", "restore"):
        return _backup(config, args)
    if args.command == "check":
        return _check(config, not args.no_progress)
    if args.command == "audit":
        return cli_security.run_audit(config, args)
    if args.command == "case":
        return cli_cases.run(config, args)
    if args.command == "demo":
        from dicomnode.ops.samples import demo_files

        with demo_files() as paths:
            code = _import(config, paths, "DEMO", not args.no_progress)
        _demo_user(config)
        return code
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
