"""The child's identity at the referring hospital, opened from the sealed linkage.

One place opens it, for the two who may have it: the forwarder sending the
hospital its report (`sending`), and that hospital's own staff looking at
their case (`viewer.cases`). Each opening is checked (the records are of
the case's child and hospital) and audited by the caller; the identity is
never stored or logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dicomnode.config import Config
from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.linkage import LinkageCipher, LinkageError, OriginalIdentity
from dicomnode.deid.names import identifying as find_identifying
from dicomnode.deid.pipeline import LINKAGE_KEY
from dicomnode.deid.secret import load_or_create_key
from storage.cases import FIELDS, Case
from storage.index import Index

DIFFERENT_CHILDREN = (
    "the case's studies name different children under one hospital ID: not re-identified"
)


# The details of a decision checked for identity: all free text; the
# indicative date is a date by design (checked as one by `storage.cases`).
CHECKED = tuple(name for name in FIELDS if name != "date")


class Unavailable(RuntimeError):
    """The identity cannot be had (no key, no record, a record that does not
    fit): the reason, naming no identity."""


@dataclass(frozen=True)
class Linked:
    """A case's child as the hospital knows them, per study of the case."""

    by_study: dict[str, OriginalIdentity]

    @property
    def newest(self) -> OriginalIdentity:
        return list(self.by_study.values())[-1]

    @property
    def studies(self) -> dict[str, str]:
        """The centre's Study Instance UIDs to the hospital's."""
        return {uid: found.study_instance_uid for uid, found in self.by_study.items()}


def cipher(config: Config) -> LinkageCipher:
    """Read each time: a key put back (or taken away) counts at once."""
    try:
        key = load_or_create_key(config.key_dir / LINKAGE_KEY, config.data_dir, create=False)
    except RuntimeError:
        raise Unavailable("the linkage key is not available: not re-identified") from None
    return LinkageCipher(key)


def _opened(config: Config, index: Index, case: Case) -> dict[str, OriginalIdentity]:
    """Every linkage record of the case's studies, opened and checked to be
    of its child's pseudonym and hospital."""
    opener = cipher(config)
    found: dict[str, OriginalIdentity] = {}
    for study_uid in case.studies:
        for linked_uid, pseudonym, sealed in index.linkage_for(study_uid):
            if linked_uid != study_uid or pseudonym != case.pseudonym:
                continue
            try:
                opened = opener.open(sealed, pseudonym, study_uid)
            except LinkageError:
                raise Unavailable("a linkage record does not open with this key") from None
            if opened.issuer != case.issuer:
                raise Unavailable("a linkage record names another hospital")
            found[study_uid] = opened
    if not found:
        raise Unavailable("the case's studies have no linkage record")
    return found


def open_case(config: Config, index: Index, case: Case) -> Linked:
    """The case's child as the hospital knows them, per study; Unavailable
    when the studies name different children (nobody is named then)."""
    found = _opened(config, index, case)
    people = {(_folded(i.patient_name), i.birth_date) for i in found.values()}
    if len(people) > 1:  # a hospital ID given to two children, or a registration slip
        raise Unavailable(DIFFERENT_CHILDREN)
    return Linked(found)


def _folded(name: str) -> str:
    return " ".join(name.replace("^", " ").casefold().split())


def identifying(
    config: Config, index: Index, case: Case, texts: Iterable[str], *, need_key: bool = True
) -> set[str]:
    """The kinds of identity (name, id, date, phone, place) in free text
    typed into a case: its child however written (the hospital's study UIDs
    too), anyone named, numbers, dates, phones, addresses by their shape.
    Without the key the child's own name cannot be looked for: Unavailable,
    or (``need_key`` false: a decision, which never waits) the rest only."""
    try:  # every child the studies name: two, when a number was given twice
        found = _opened(config, index, case)
    except Unavailable:
        if need_key:
            raise
        found = {}
    pairs = {pair for one in found.values() for pair in one.values()}
    pairs |= {("id", one.study_instance_uid) for one in found.values()}
    matcher = IdentityMatcher.from_values(sorted(pairs))
    return {kind for text in texts if text for kind in find_identifying(text, matcher)}
