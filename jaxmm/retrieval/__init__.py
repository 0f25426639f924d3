"""Multi-vector retrieval: packed MaxSim index, sharded search, TREC run/qrels I/O."""

from jaxmm.retrieval.index import IndexFormatError, MultiVectorIndex
from jaxmm.retrieval.search import default_mesh, sharded_search
from jaxmm.retrieval.trec import read_qrels, read_run, write_qrels, write_run

__all__ = [
    "IndexFormatError",
    "MultiVectorIndex",
    "default_mesh",
    "read_qrels",
    "read_run",
    "sharded_search",
    "write_qrels",
    "write_run",
]
