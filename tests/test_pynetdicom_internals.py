"""The pynetdicom internals the node relies on, checked by name and shape.

dicomnode/dimse/ subclasses pynetdicom's ACSE, request handler, socket,
server and DIMSE provider, overrides private methods and reads private
attributes (pyproject.toml pins the minor version for that reason). An
upgrade that renames a method, changes its parameters, drops an attribute,
or adds one of the names the node's subclasses define for themselves fails
here with a message naming what changed, instead of as a hung association.
"""

from __future__ import annotations

import ast
import inspect
import queue
import re
import socket
import textwrap
import tomllib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom._uid_dict
import pynetdicom
import pytest
from pynetdicom import _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import (
    AssociationServer,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from dicomnode.dimse import batching, receive, server, stored, transport, waking

ROOT = Path(__file__).resolve().parents[1]

# (owner, name, parameter names): methods the node overrides or calls beyond
# pynetdicom's documented API, with the parameters it overrides them with.
METHODS: list[tuple[Any, str, list[str]]] = [
    (ACSE, "_negotiate_as_acceptor", ["self"]),
    (ACSE, "_check_sop_class_common_extended", ["self"]),
    (ACSE, "negotiate_association", ["self"]),
    (ACSE, "send_reject", ["self", "result", "source", "diagnostic"]),
    (RequestHandler, "_create_association", ["self"]),
    (RequestHandler, "handle", ["self"]),
    (AssociationSocket, "__init__", ["self", "assoc", "client_socket", "address"]),
    (AssociationSocket, "recv", ["self", "nr_bytes"]),
    (AssociationSocket, "close", ["self"]),
    (AssociationServer, "get_request", ["self"]),
    (AssociationServer, "server_close", ["self"]),
    (AssociationServer, "verify_request", ["self", "request", "client_address"]),
    (AssociationServer, "close_request", ["self", "request"]),
    (AssociationServer, "shutdown_request", ["self", "request"]),
    (DIMSEServiceProvider, "receive_primitive", ["self", "primitive"]),
    (DIMSEServiceProvider, "send_msg", ["self", "primitive", "context_id"]),
    (DULServiceProvider, "kill_dul", ["self"]),
    (DULServiceProvider, "_send", ["self", "pdu"]),  # dimse/batching.py
    (DULServiceProvider, "_process_recv_primitive", ["self"]),
    (Association, "kill", ["self"]),
    (Association, "run", ["self"]),
    (AssociationServer, "server_bind", ["self"]),
    (
        ApplicationEntity,
        "associate",
        [
            "self",
            "addr",
            "port",
            "contexts",
            "ae_title",
            "max_pdu",
            "ext_neg",
            "bind_address",
            "tls_args",
            "evt_handlers",
        ],
    ),
    (
        Association,
        "send_c_store",
        ["self", "dataset", "msg_id", "priority", "originator_aet", "originator_id"],
    ),
    (evt, "trigger", ["assoc", "event", "attrs"]),
    (queue.Queue, "_put", ["self", "item"]),  # waking.WakingQueue: called under the lock
]

# Keyword arguments the node passes (``request_handler`` reaches the server
# through make_server's **kwargs).
KEYWORDS: list[tuple[Any, str, set[str]]] = [
    (
        ApplicationEntity,
        "make_server",
        {"address", "ssl_context", "evt_handlers", "server_class", "kwargs"},
    ),
    (
        AssociationServer,
        "__init__",
        {"ae", "address", "ae_title", "contexts", "ssl_context", "evt_handlers", "request_handler"},
    ),
]

# What each node subclass deliberately overrides on its pynetdicom base; any
# other name it defines that the base also has is a collision.
OVERRIDES: dict[type, set[str]] = {
    transport.GuardedSocket: {"recv", "close"},
    transport.GuardedACSE: {"negotiate_association", "_negotiate_as_acceptor"},
    server.StorageACSE: {"_negotiate_as_acceptor", "_check_sop_class_common_extended"},
    transport.GuardedAssociation: {"run"},
    transport.GuardedRequestHandler: {"handle", "_create_association"},
    server.StorageRequestHandler: {"_create_association"},
    transport.NodeAssociationServer: {
        "__init__",
        "request_queue_size",
        "get_request",
        "verify_request",
        "close_request",
        "server_close",
        "contexts",  # replaced by SharedContexts
        "server_bind",  # SO_REUSEPORT for `receivers`
    },
    transport.SharedPortServer: set(),
    stored.SendsStoredFiles: {"send_c_store"},
    stored.NodeAE: {"associate"},
    waking.WakingDUL: {"_run_loop_delay", "_kill_thread"},
    batching.BatchingSend: {"_send", "_process_recv_primitive"},
    receive.SpoolingDIMSE: {"receive_primitive", "message"},
}

# Attributes the node sets on pynetdicom objects from outside their classes
# (dimse/server.py, dimse/receive.py): pynetdicom must not use them itself.
ADDED_TO_ASSOCIATION = {"node_services", "connection"}
ADDED_TO_SERVER = {
    "policy",
    "limits",
    "services_of",
    "on_reject",
    "unknown_sop_class_accepted",
    "on_class_refused",
    "max_connections",
    "max_pending_per_address",
    "association_request_seconds",
}
ADDED_TO_DIMSE = {"spool", "threshold"}


@pytest.fixture(scope="module")
def ae() -> ApplicationEntity:
    return ApplicationEntity()


@pytest.fixture(scope="module")
def assoc(ae: ApplicationEntity) -> Association:
    return Association(ae, "acceptor")


@pytest.fixture(scope="module")
def plain_socket(assoc: Association) -> Iterator[AssociationSocket]:
    with socket.socket() as raw:
        yield AssociationSocket(assoc, client_socket=raw)


@pytest.fixture(scope="module")
def association_server() -> Iterator[ThreadedAssociationServer]:
    server_ae = ApplicationEntity()
    server_ae.add_supported_context("1.2.840.10008.1.1")
    made = server_ae.make_server(("127.0.0.1", 0), evt_handlers=[])
    try:
        yield made
    finally:
        made.server_close()


def _where(owner: Any) -> str:
    return getattr(owner, "__qualname__", getattr(owner, "__name__", repr(owner)))


def test_the_installed_pynetdicom_is_the_pinned_minor_version() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [p for p in pins if p.startswith("pynetdicom")]
    minor = re.fullmatch(r"pynetdicom>=(\d+\.\d+)\.\d+,<\d+\.\d+", pin)
    assert minor, f"pynetdicom is not pinned to a minor version: {pin!r}"
    assert pynetdicom.__version__.startswith(minor.group(1) + "."), (
        f"pynetdicom {pynetdicom.__version__} is installed, the pin is {pin!r}: "
        "check tests/test_pynetdicom_internals.py against the new version, then move the pin"
    )


@pytest.mark.parametrize(("owner", "name", "parameters"), METHODS, ids=lambda v: str(v))
def test_a_method_the_node_overrides_or_calls_keeps_its_parameters(
    owner: Any, name: str, parameters: list[str]
) -> None:
    function = getattr(owner, name, None)
    assert callable(function), f"pynetdicom {_where(owner)}.{name} is gone"
    found = list(inspect.signature(function).parameters)
    assert found == parameters, (
        f"pynetdicom {_where(owner)}.{name} now takes {found}, the node expects {parameters}"
    )


@pytest.mark.parametrize(
    ("owner", "name", "keywords"),
    KEYWORDS,
    # Sorted: a set prints in hash order, and xdist workers must collect the same ids.
    ids=lambda v: str(sorted(v)) if isinstance(v, set) else str(v),
)
def test_a_call_the_node_makes_keeps_its_keywords(owner: Any, name: str, keywords: set) -> None:
    found = set(inspect.signature(getattr(owner, name)).parameters)
    assert keywords <= found, f"pynetdicom {_where(owner)}.{name} lost {keywords - found}"


def test_private_attributes_the_node_reads_or_sets(
    ae: ApplicationEntity, assoc: Association, plain_socket: AssociationSocket
) -> None:
    """Each on a real object, as pynetdicom makes it."""
    expected: list[tuple[str, Any, str, type | tuple[type, ...]]] = [
        ("ApplicationEntity", ae, "_servers", list),  # DicomServer.start
        ("Association", assoc, "_server", type(None)),  # the ACSEs, GuardedAssociation
        ("DULServiceProvider", assoc.dul, "_run_loop_delay", float),  # handle_open
        ("DULServiceProvider", assoc.dul, "to_provider_queue", queue.Queue),
        ("DULServiceProvider", assoc.dul, "to_user_queue", queue.Queue),
        ("DIMSEServiceProvider", assoc.dimse, "message", type(None)),  # SpoolingDIMSE
        ("DIMSEMessage", DIMSEMessage(), "data_set", BytesIO),  # SpillingBuffer
        ("AssociationSocket", plain_socket, "_assoc", Association),  # GuardedSocket
        ("AssociationSocket", plain_socket, "socket", socket.socket),
        ("ServiceUser", assoc.requestor, "primitive", type(None)),  # _negotiate_as_acceptor
    ]
    for owner, instance, name, kind in expected:
        assert hasattr(instance, name), f"pynetdicom {owner} has no attribute {name} any more"
        value = getattr(instance, name)
        assert isinstance(value, kind), (
            f"pynetdicom {owner}.{name} is a {type(value).__name__} now, not {kind}"
        )
    assert plain_socket.assoc is assoc
    timeout = inspect.getattr_static(Association, "acse_timeout")
    assert isinstance(timeout, property) and timeout.fset, "Association.acse_timeout: no setter"


def test_private_module_names_the_node_reads() -> None:
    # dicomnode/logs.py: identifiers (patient data) stay out of the log.
    for flag in ("LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS"):
        assert isinstance(getattr(_config, flag, None), bool), f"pynetdicom._config.{flag} gone"
    # dicomnode/media/sopclasses.py: every storage class pynetdicom knows, by keyword.
    assert isinstance(_STORAGE_CLASSES, dict) and len(_STORAGE_CLASSES) > 100
    keyword, uid = next(iter(_STORAGE_CLASSES.items()))
    assert isinstance(keyword, str) and str(uid).startswith("1.2.840.10008.5.1.4.1.1.")
    # dicomnode/media/sopclasses.py names a class by PS3.6 (pydicom's private table).
    assert pydicom._uid_dict.UID_dictionary["1.2.840.10008.5.1.4.1.1.6.1"][0]


def test_the_request_handler_still_builds_the_association_as_the_node_assumes() -> None:
    """GuardedRequestHandler takes over what ``_create_association`` returns
    (its socket, ``_server``); SharedContexts relies on the per-connection
    deepcopy of the server's contexts."""
    source = inspect.getsource(RequestHandler._create_association)
    for piece in (
        "assoc._server = self.server",
        "AssociationSocket(",
        "assoc.set_socket(",
        "deepcopy(self.server.contexts)",
    ):
        assert piece in source, f"RequestHandler._create_association no longer does {piece!r}"


def _own_names(cls: type) -> set[str]:
    """Names a node class defines: its class body and every ``self.X =``."""
    names = {n for n in vars(cls) if not (n.startswith("__") and n.endswith("__"))}
    names |= {n for n in ("__init__",) if n in vars(cls)}
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            parts = target.elts if isinstance(target, ast.Tuple) else [target]
            for part in parts:  # ``self.x = ``, not ``self.x.y = ``
                if (
                    isinstance(part, ast.Attribute)
                    and isinstance(part.value, ast.Name)
                    and part.value.id in ("self", "guarded")
                ):
                    names.add(part.attr)
    return names


def _pynetdicom_base(cls: type) -> type:
    return next(b for b in cls.__mro__[1:] if b.__module__.startswith("pynetdicom"))


@pytest.mark.parametrize("cls", list(OVERRIDES), ids=lambda c: c.__name__)
def test_a_node_subclass_collides_with_no_pynetdicom_name(
    cls: type,
    assoc: Association,
    plain_socket: AssociationSocket,
    association_server: ThreadedAssociationServer,
) -> None:
    base = _pynetdicom_base(cls)
    instances: dict[type, Any] = {
        AssociationSocket: plain_socket,
        ACSE: assoc.acse,
        Association: assoc,
        DIMSEServiceProvider: assoc.dimse,
        DULServiceProvider: assoc.dul,
        ThreadedAssociationServer: association_server,
    }
    theirs = set(dir(base)) | set(vars(instances[base]) if base in instances else ())
    clashes = (_own_names(cls) & theirs) - OVERRIDES[cls]
    assert not clashes, f"pynetdicom {base.__qualname__} now has {sorted(clashes)} of {cls}"
    missing = OVERRIDES[cls] - theirs
    assert not missing, f"{cls} overrides {sorted(missing)}, gone from {base.__qualname__}"


def test_attributes_the_node_adds_are_not_pynetdicom_s(
    assoc: Association, association_server: ThreadedAssociationServer
) -> None:
    for added, instance in (
        (ADDED_TO_ASSOCIATION, assoc),
        (ADDED_TO_SERVER - set(vars(transport.NodeAssociationServer)), association_server),
        (ADDED_TO_DIMSE, assoc.dimse),
    ):
        taken = {name for name in added if hasattr(instance, name)}
        assert not taken, f"pynetdicom {type(instance).__qualname__} now has {sorted(taken)}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_every_private_pynetdicom_name_in_the_node_is_checked_here() -> None:
    """A new ``._name`` use on a pynetdicom object must be added above."""
    known = {
        "_negotiate_as_acceptor",
        "_check_sop_class_common_extended",
        "_create_association",
        "_server",
        "_servers",
        "_run_loop_delay",
        "_assoc",
        "_STORAGE_CLASSES",
        "_config",
        "_uid_dict",
        "_put",  # the standard library's Queue hook (waking.WakingQueue), checked below
    }
    # Names the node's own classes define (not pynetdicom's).
    own = set().union(*(_own_names(cls) for cls in OVERRIDES)) - known
    found: set[str] = set()
    for path in [*(ROOT / "dicomnode").rglob("*.py"), *(ROOT / "viewer").rglob("*.py")]:
        text = path.read_text()
        if "pynetdicom" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                # ``self._x`` is the node's own class; anything else is pynetdicom's.
                if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    found.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("pynetdicom", "pydicom")
            ):
                found |= {a.name for a in node.names if a.name.startswith("_")}
                found |= {p for p in (node.module or "").split(".") if p.startswith("_")}
    unchecked = found - known
    assert not unchecked, f"private names used on pynetdicom objects, unchecked: {unchecked}"


def test_a_path_is_still_sent_in_pdu_sized_reads() -> None:
    """`dimse.stored` hands send_c_store a path and relies on pynetdicom
    reading the file in pieces (not dcmread) when this flag is set."""
    import inspect

    from pynetdicom import _config, association, dimse_messages

    assert _config.STORE_SEND_CHUNKED_DATASET is True  # set by dicomnode.dimse.stored
    assert "req._dataset_path = (fpath, offset)" in inspect.getsource(association)
    assert "self._data_set_path[1]" in inspect.getsource(dimse_messages)


def test_the_dul_still_sleeps_where_the_waking_dul_waits() -> None:
    """`dimse.waking` waits inside the read of ``_run_loop_delay``: the loop
    must still read it exactly where it sleeps, once per idle turn."""
    import inspect

    source = inspect.getsource(DULServiceProvider.run_reactor)
    assert source.count("time.sleep(self._run_loop_delay)") == 1
    assert "self.to_provider_queue" in inspect.getsource(DULServiceProvider)
