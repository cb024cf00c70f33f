"""An element as a data set holds it, a deferred value left unread.

``Dataset.get_item(tag, keep_deferred=True)`` gives the raw element (a
`RawDataElement`: value None while deferred, with ``value_tell`` and
``length`` to read it at) unless the value was read since, but pydicom's
type hint says `DataElement` only: callers narrow on what this says.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset


def kept_deferred(ds: Dataset, tag: int) -> DataElement | RawDataElement:
    """``ds``'s element at ``tag`` without reading a deferred value."""
    return ds.get_item(tag, keep_deferred=True)
