"""BTF, the kernel's description of its own types: the binary format and its index
(``format``), types by id and name (``table``), member paths through nested and anonymous
members (``paths``), what queries return (``types``), and the ``BTF`` class (``queries``).
"""
