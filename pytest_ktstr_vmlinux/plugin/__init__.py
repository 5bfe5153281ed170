"""The pytest adapter, and only pytest: options and ini keys with their precedence
(``settings``, ``options``), hooks (``hooks``), the lazy run state (``run``), the kernel fixtures
(``fixtures``), ``ktstr`` requirement checks (``checks``, ``strict``), the marker (``markers``),
per-kernel results for JUnit (``results``) and the guest fixtures (``vm``). The pytest11 entry
point ``ktstr_vmlinux`` names ``plugin.hooks``.
"""
