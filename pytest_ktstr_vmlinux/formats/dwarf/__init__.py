"""DWARF, read as far as a table of global variables' types needs: entries and forms (``dies``),
an ELF's debug sections (``sections``), a type entry as a C type expression (``ctypes``), the
file-scope variables of every unit (``variables``), and the table built once per vmlinux through
the store (``globaltypes``: ``GlobalTypes``).
"""
