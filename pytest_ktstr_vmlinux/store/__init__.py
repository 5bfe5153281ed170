"""The artifact store: one build of each expensive artifact for every process and every run.
Knows no kernel format.

From the base up:

- ``store/files.py`` and ``store/signature.py``: low-level file helpers (atomic publication,
  removal, opening the store's own files, the full-disk error) and which version of which file
  (canonical paths, stat signatures, racy files).
- ``store/api.py``: the ``Store`` protocol, what stores hand out (``StoredArtifact``) and what
  they raise; every caller of a store imports from here.
- ``store/memory.py``: ``MemoryStore``, the store without a disk.
- ``store/disk.py``: ``ArtifactStore``, the on-disk store, made of the directory and its checks
  (``store/directory.py``), the lock (``store/lock.py``), the artifact files with their index and
  exports (``store/artifacts.py``, ``store/artifact.py``, ``store/index.py``, ``store/exports.py``,
  ``store/pins.py``, ``store/evict.py``) and published trees (``store/trees.py``,
  ``store/treefiles.py``).
- ``store/choose.py``: which store a run gets, on disk or in memory.
- ``store/snapshot.py`` and ``store/bytescache.py``: vmlinux bytes, as store snapshots or read.
"""
