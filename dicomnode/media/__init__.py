"""DICOM encoding below de-identification: streams, spool, codecs, SOP classes."""
