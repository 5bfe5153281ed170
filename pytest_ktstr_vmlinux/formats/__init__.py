"""Parsers of kernel files, with no search and no I/O policy of their own: ELF (``elf``,
``elftables``, ``notes``), kernel images and their payloads (``image``, ``decompress``, ``lzop``),
``.config`` (``kconfig``), symbol tables (``symbols``, ``symsort``, ``_symsort.c``) and BTF
(``btf/``). They may build through a store (``store/``); they know nothing of where a kernel's
files live (``kernel/``) or of pytest.
"""
