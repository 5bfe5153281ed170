"""Distro kernels on demand: ``debian:sid`` fetched with the distro's own client, verified by
it, unpacked into a tree of the store and resolved there like any kernel in a sysroot.

``specs`` parses fetch specs; ``fetch`` is the flow every distro shares (refs, trees, locks,
offline use); ``distro`` what a distro module gives it; ``debian`` Debian's plans and their
errors, ``archive`` its suites, flavours and architectures; ``apt`` Debian's client on private
lists; ``build`` a tree from packages, each unpacked (``unpack``) while it downloads
(``follow``); ``process`` the programs run; ``progress`` what is said meanwhile; ``listing`` the
fetched kernels, for ``ktstr-vmlinux kernels``.
"""
