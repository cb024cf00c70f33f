"""CHD imaging exchange node: receives, de-identifies, stores and serves DICOM."""

__version__ = "0.1.0"

# The project's UID root: a UUID-derived OID (PS3.5 B.2), so it needs no
# registration and cannot collide; every UID the project mints is below it.
UID_ROOT = "2.25.132642019201457772522754950190331625276"
# The node's own identity on the wire and in the files it writes (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = UID_ROOT + ".1.1"
IMPLEMENTATION_VERSION_NAME = "CHDNODE_010"
