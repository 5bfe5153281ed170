"""Parsers of kernel files, with no search and no I/O policy of their own: ELF (``elf``: what a
file is; ``elftables``: its headers, every count checked first; ``elfidentity``: build-id and
banner; ``notes``: the build-id of a flat image), kernel images and their payloads (``image``,
``decompress``, ``lzop``), ``.config`` (``kconfig``), symbol tables (``symbols``: lookups;
``symbolpack``: the packed artifact; ``symsort``, ``_symsort.c``) and BTF (``btf/``). They may
build through a store (``store/``); they know nothing of where a kernel's files live
(``kernel/``) or of pytest.
"""
