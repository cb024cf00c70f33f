"""Where instances live and how they are found.

`storage` knows DICOM data (pydicom) but nothing of the node or the viewer:
a blob store for the files, an SQL index for the attributes, and the one
translation of DICOM matching rules to SQL that C-FIND and QIDO-RS share.
"""

from storage.archive import Archive
from storage.blobs import BlobStore
from storage.index import Index, StoreOutcome
from storage.query import Query, QueryError

__all__ = ["Archive", "BlobStore", "Index", "Query", "QueryError", "StoreOutcome"]
