"""DICOM upper layer: the association server, its handlers and guards."""
