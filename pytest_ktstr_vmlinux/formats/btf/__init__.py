"""BTF, the kernel's description of its own types: the binary format and its index
(``format``), what queries return (``types``), and the queries themselves (``queries``).
"""
