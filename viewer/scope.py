"""Which children a web account sees: its hospitals' patients, decided here.

An account sees the patients of the issuers in its ``sees`` (None: every
hospital's, as the regional centre's cardiologists do). Two doors, both here:

- Every route whose URL names a study, series or instance is checked before
  its view runs (`check`, a before_request after login and the role check).
  Which arguments name what is read from the URL rule itself, by the path
  segment before the argument (``studies/<x>`` a study, ``series/<x>`` a
  series, ``instances/<x>`` an instance), so a new route is covered as it
  is written; tests/test_scope.py fails for an argument that is neither such
  an object nor listed in NOT_OBJECTS. An object outside the account's
  hospitals answers 404 with the words an unknown one gets: the answer does
  not tell that it exists. The attempt goes to the audit trail.
- Lists (study browser, QIDO-RS, statistics, research export) pass
  `issuers()` to `storage.query.Query`, which restricts every level in SQL.

A path argument must be one well-formed UID, for every account (400
otherwise, `viewer.uids`): a wildcard or a backslash-separated list would
match many studies at once.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import Any

from flask import Flask, abort, g, request

from storage.audit import MINOR_FAILURE
from storage.keys import UNIQUE_KEY, Level
from storage.query import Query
from viewer import services
from viewer.auth import audit
from viewer.uids import exact_uid

# The path segment before an argument, and the level of what it names.
SEGMENTS: dict[str, Level] = {
    "studies": Level.STUDY,
    "series": Level.SERIES,
    "instances": Level.IMAGE,
}
# View arguments that name no stored object (frame numbers, plan and version
# numbers, export jobs, static files, OHIF's files, bulk data attribute paths;
# a referral case's reference, which `viewer.cases` looks up within the
# account's hospitals itself, answering 404 as here).
NOT_OBJECTS = frozenset(
    {
        "filename",
        "number",
        "first",
        "last",
        "plan",
        "version",
        "frames",
        "job_id",
        "attribute",
        "path",
        "ref",  # a referral case: `viewer.cases` checks it against the account's hospitals
        "pk",  # a case's report: looked up among that case's reports only
    }
)
_ARGUMENT = re.compile(r"/([^/<>]+)/<(?:[^:<>]+:)?([^<>]+)>")
# What a route says of an object it cannot find, so the scope's 404 reads the same.
NOT_FOUND = {
    Level.STUDY: "no such study",
    Level.SERIES: "no such series",
    Level.IMAGE: "no such instance",
}
DICOMWEB_NOT_FOUND = "nothing stored matches"


@cache
def objects_named(rule: str) -> dict[str, Level]:
    """The view arguments of a URL rule that name a study, series or instance."""
    return {
        arg: SEGMENTS[segment] for segment, arg in _ARGUMENT.findall(rule) if segment in SEGMENTS
    }


def issuers() -> frozenset[str] | None:
    """The hospitals whose patients the request's account sees (None: all).
    No account (which a route behind login never lacks): none."""
    user = g.get("user")
    return frozenset() if user is None else user.sees


def _refuse(level: Level) -> None:
    blueprint = request.blueprint or ""
    abort(404, description=DICOMWEB_NOT_FOUND if blueprint == "dicomweb" else NOT_FOUND[level])


def check() -> None:
    """404 unless every object the URL names is one of the account's."""
    rule = request.url_rule
    if rule is None or g.get("user") is None or not request.view_args:
        return
    levels = objects_named(rule.rule)
    if not levels:
        return
    deepest = max(levels.values(), key=lambda level: level.depth)
    keys: dict[str, str] = {}
    for argument, level in levels.items():
        value = str(request.view_args.get(argument, ""))
        keys[UNIQUE_KEY[level]] = exact_uid(value, UNIQUE_KEY[level])
    sees = issuers()
    if sees is None:
        return
    index = services.archive().index
    if list(index.find(Query(deepest, keys, limit=1, issuers=sees))):
        return
    if list(index.find(Query(deepest, keys, limit=1))):
        audit(
            "access-denied",
            g.user.username,
            obj=keys[UNIQUE_KEY[deepest]],
            detail=f"{request.endpoint}: another hospital's patient",
            outcome=MINOR_FAILURE,
        )
    _refuse(deepest)


def stats(index: Any) -> dict[str, Any]:
    """/api/stats for the account: the whole archive's figures for one that
    sees all; counts of its hospitals' patients, studies, series, instances
    and modalities otherwise (bytes, duplicates and senders are the
    archive's, not a hospital's, and are left out)."""
    sees = issuers()
    if sees is None:
        return index.stats()
    counts = dict.fromkeys(("studies", "series", "instances"), 0)
    keys = {f"NumberOfPatientRelated{name.title()}": "" for name in counts}
    patients = 0
    for row in index.find(Query(Level.PATIENT, keys, issuers=sees)):
        patients += 1
        for name in counts:
            counts[name] += row[f"NumberOfPatientRelated{name.title()}"] or 0
    modalities: Counter[str] = Counter()
    per_series = {"Modality": "", "NumberOfSeriesRelatedInstances": ""}
    for row in index.find(Query(Level.SERIES, per_series, issuers=sees)):
        modalities[row["Modality"] or ""] += row["NumberOfSeriesRelatedInstances"] or 0
    return {"patients": patients, **counts, "modalities": dict(modalities)}


def install(app: Flask) -> None:
    """After login and the role check (auth's hook is registered first)."""
    app.before_request(check)
