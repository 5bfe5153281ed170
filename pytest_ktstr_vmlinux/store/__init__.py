"""The artifact store: one build of each expensive artifact for every process and every run.

The on-disk store (``disk``) and its memory twin (``memory``), what both hand out (``served``),
how a store is chosen (``choose``); on disk: the directory and its checks (``directory``), the
lock (``lock``), the index (``index``, ``indexfile``, ``stamps``), atomic publication
(``publish``), the artifact file format (``artifact``), eviction (``evict``), exports and the pins
that keep them (``exports``, ``pins``), vmlinux snapshots (``snapshot``); file versions
(``signature``) and the in-process bytes cache (``bytescache``). Knows no kernel format.
"""
