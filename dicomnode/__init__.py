"""CHD imaging exchange node: receives, de-identifies, stores and serves DICOM."""

__version__ = "0.1.0"

# The node's own identity on the wire and in the files it writes (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1364.1.1"
IMPLEMENTATION_VERSION_NAME = "CHDNODE_010"
