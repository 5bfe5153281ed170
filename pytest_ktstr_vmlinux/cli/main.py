"""``python -m pytest_ktstr_vmlinux`` (also ``ktstr-vmlinux``): diagnostics without pytest.

    --version                            the package's version

    info PATH|SPEC [--kernel-sysroot DIR] [--vmlinux PATH] [--json]  what a kernel is: arch,
                                         release, banner, build-id, compression, config, vmlinux
    locate [SPEC] [--kernel-sysroot DIR] [--vmlinux PATH] [--json]   the probe report
    symbols | addr | offsetof | btf SPEC ... [--kernel-sysroot DIR] [--vmlinux PATH]
                                                                      (``query.py``)
    cache path | list [--json] | clear [--cache-dir DIR]             the on-disk artifact store
    kernels [--json] | kernels remove SPEC [--cache-dir DIR]          fetched kernels
                                                                      (``kernels.py``)

A SPEC may be a distro kernel to fetch (``debian:sid``), fetched into the store as the plugin
does, with progress on stderr; $KTSTR_KERNEL_OFFLINE=1 uses the store's copy without asking.

Exit status: 0 on success (``info`` and ``locate``: the kernel's vmlinux was found); 1 for a bad
argument, a bad file or no vmlinux, with one clear line on stderr (``info`` and ``locate`` print
their report first, and the line says what is missing); 2 when argparse refuses the command line
(an unknown verb or option, a missing argument); 141, as for a tool killed by SIGPIPE, when the
reader of stdout goes away (``symbols running | head``). Every message on stderr starts with the
name the command was run by (``ktstr-vmlinux``, ``python -m pytest_ktstr_vmlinux``). The store
directory follows the plugin's rule: --cache-dir > $KTSTR_CACHE_DIR > default; a wait for its lock
ends after $KTSTR_LOCK_TIMEOUT seconds, as in the plugin.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import KernelArtifactError, VmlinuxNotFoundError
from ..kernel.fetch.fetch import ENV_OFFLINE, FetchOptions, parse_offline
from ..kernel.fetch.progress import TerminalProgress
from ..kernel.identity import vmlinux_identity
from ..kernel.resolve import Kernel, resolve_kernel
from ..kernel.spec import RUNNING, SpecSource, check_sysroot, select_setting
from ..store.choose import ENV_CACHE_DIR, ENV_LOCK_TIMEOUT, open_store
from ..store.directory import default_store_dir
from ..store.disk import DEFAULT_LOCK_TIMEOUT, ArtifactStore
from ..store.lock import parse_lock_timeout
from .kernels import list_kernels, remove_kernel
from .query import check_query_arguments, run_query

EXIT_OK = 0
EXIT_BAD = 1
# What the shell reports for nm killed by SIGPIPE under `nm | head`: a pipeline with pipefail, or a
# script that excuses 141 there, treats the two tools alike.
EXIT_SIGPIPE = 128 + signal.SIGPIPE
PROG = "ktstr-vmlinux"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """The command; ``prog`` is the name it was invoked by, for its usage line, --help, --version
    and every message (the console script takes the default, ``python -m`` passes its own
    spelling)."""
    try:
        status = _run(argv, prog)
        # Flushed here rather than by the interpreter at exit, so that a reader that has gone
        # is met by the handler below and not reported as an exception ignored at shutdown.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has what it wanted (head, grep -q): stop quietly, as nm does. stdout goes
        # to /dev/null so that the interpreter's last flush of what is buffered cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_SIGPIPE
    return status


def _run(argv: Sequence[str] | None, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    info = verbs.add_parser("info", help="identify a kernel image, vmlinux, tree or release")
    locate = verbs.add_parser("locate", help="resolve a kernel spec and show every probed path")
    for verb in (info, locate):
        verb.add_argument(
            "spec",
            nargs="?" if verb is locate else None,
            help="image, vmlinux, build tree, release or 'running'"
            + (" (default: $KTSTR_KERNEL, else running)" if verb is locate else ""),
        )
        verb.add_argument(
            "--kernel-sysroot", "--sysroot", dest="sysroot", help="directory standing in for /"
        )
        verb.add_argument("--vmlinux", help="explicit vmlinux; skips the search")
        verb.add_argument("--json", action="store_true", help="machine-readable output")
    queries = {
        "symbols": verbs.add_parser("symbols", help="symbol addresses (all names if none given)"),
        "addr": verbs.add_parser("addr", help="the symbol (+offset) at an address"),
        "offsetof": verbs.add_parser("offsetof", help="a member's offset from BTF"),
        "btf": verbs.add_parser("btf", help="a type's layout from BTF, pahole-like"),
    }
    for name, verb in queries.items():
        verb.add_argument("spec", help="image, vmlinux, build tree, release or 'running'")
        verb.add_argument(
            "--kernel-sysroot", "--sysroot", dest="sysroot", help="directory standing in for /"
        )
        verb.add_argument("--vmlinux", help="explicit vmlinux; skips the search")
        if name != "btf":
            verb.add_argument("--json", action="store_true", help="machine-readable output")
    queries["symbols"].add_argument("names", nargs="*", metavar="NAME")
    queries["addr"].add_argument("address", help="e.g. 0xffffffff81000000")
    queries["offsetof"].add_argument("type", help="e.g. 'struct rq'")
    queries["offsetof"].add_argument("member", help="e.g. nr_running, or scx.nr_running")
    queries["btf"].add_argument("type", help="e.g. 'struct rq'")
    cache = verbs.add_parser("cache", help="the on-disk kernel artifact store")
    cache.add_argument("action", choices=["path", "list", "clear"])
    cache.add_argument("--cache-dir", help="store directory (default: $KTSTR_CACHE_DIR, else XDG)")
    cache.add_argument("--json", action="store_true", help="machine-readable list")
    kernels = verbs.add_parser("kernels", help="the fetched kernels (debian:...) of the store")
    kernels.add_argument(
        "action", nargs="*", metavar="remove SPEC", help="remove the kernel SPEC names"
    )
    kernels.add_argument(
        "--cache-dir", help="store directory (default: $KTSTR_CACHE_DIR, else XDG)"
    )
    kernels.add_argument("--json", action="store_true", help="machine-readable list")
    # NAMEs may follow options (`symbols SPEC --kernel-sysroot DIR runqueues`).
    args, extra = parser.parse_known_args(argv)
    if extra and (args.verb != "symbols" or any(a.startswith("-") for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.verb == "symbols":
        args.names += extra
    if args.verb == "cache":
        return _cache(args.action, args.cache_dir, prog, as_json=args.json)
    if args.verb == "kernels":
        if args.action and (args.action[0] != "remove" or len(args.action) != 2):
            parser.error("kernels takes no argument, or `remove SPEC`")
        remove = args.action[1] if args.action else None
        return _kernels(remove, args.cache_dir, prog, as_json=args.json)
    if args.verb in queries:
        try:
            check_query_arguments(args)
        except ValueError as e:
            return _fail(e, prog)
    raw, source = _kernel_setting(args.spec)
    try:
        timeout = lock_timeout()
    except ValueError as e:
        return _fail(e, prog)
    try:
        sysroot = (
            check_sysroot(args.sysroot, SpecSource.OPTION, os.getcwd())
            if args.sysroot is not None
            else None
        )
        store, problem = open_store(
            os.environ.get(ENV_CACHE_DIR) or None,
            lock_timeout=timeout,
            on_lock_wait=functools.partial(_notice, prog),
        )
        if problem is not None:
            print(f"{prog}: warning: {problem}", file=sys.stderr)
        kernel = resolve_kernel(
            raw,
            vmlinux=args.vmlinux,
            sysroot=sysroot,
            source=source,
            store=store,
            fetch=_fetch_options(prog),
        )
        if args.verb in queries:
            return run_query(args, kernel)
        report = kernel_to_json(kernel, with_config=args.verb == "info")
    except (KernelArtifactError, KeyError) as e:
        # KeyError: a symbol, type or member that is not there, with close matches.
        return _fail(e, prog)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.verb == "info":
        for key in ("arch", "release", "banner", "build_id", "compression", "config"):
            print(f"{key:<12} {report[key] if report[key] is not None else 'unknown'}")
        if kernel.vmlinux is not None:
            print(f"{'vmlinux':<12} {kernel.vmlinux} (paired: {report['paired']})")
        else:  # what was looked for; `locate` lists every path
            print(f"{'vmlinux':<12} none: {kernel.report.summary()}")
    else:
        print(f"kernel   {kernel.spec.raw} ({kernel.spec.kind.value}, from {source.value})")
        print(f"image    {kernel.image or 'none'}")
        print(f"release  {kernel.release or 'unknown'}")
        print(f"arch     {kernel.arch or 'unknown'}")
        print(f"vmlinux  {kernel.vmlinux or 'none'}")
        print(kernel.report.format())
    if kernel.vmlinux is None:
        return _no_vmlinux(kernel, args.verb, prog)
    return EXIT_OK


def _no_vmlinux(kernel: Kernel, verb: str, prog: str) -> int:
    """``info`` and ``locate`` of a kernel without a vmlinux: the report is printed, the exit
    status is 1 and one line on stderr says what is missing and how to get it."""
    sys.stdout.flush()  # the report first, where both go to one terminal
    where = "" if verb == "locate" else f"; `{prog} locate` lists every path probed"
    return _error(
        f"no vmlinux for kernel {kernel.spec.raw!r} (release {kernel.release or 'unknown'}):"
        f" {kernel.report.summary()}{where}; install its debug package (Debian/Ubuntu:"
        " linux-image-R-dbg or -dbgsym; Fedora: kernel-debuginfo), build vmlinux, or pass"
        " --vmlinux",
        prog,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("pytest-ktstr-vmlinux")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def kernel_to_json(kernel: Kernel, *, with_config: bool = False) -> dict[str, Any]:
    """The documented JSON keys: arch, release, banner, build_id, compression, vmlinux, paired,
    probes, image_probes (and config, the config's source, for ``info``)."""
    info = kernel.image_info
    banner = info.banner if info else None
    if banner is None and kernel.vmlinux is not None:
        banner = vmlinux_identity(kernel.vmlinux, kernel.store).banner
    report: dict[str, Any] = {
        "arch": kernel.arch,
        "release": kernel.release,
        "banner": banner,
        "build_id": kernel.build_id,
        "compression": info.compression if info else "none",
        "vmlinux": str(kernel.vmlinux) if kernel.vmlinux else None,
        "paired": kernel.paired,
        "probes": [
            {"path": str(c.path), "layout": c.layout, "refused": c.refused}
            for c in kernel.report.candidates
        ],
        "image_probes": [
            {"path": str(c.path), "layout": c.layout, "refused": c.refused}
            for c in kernel.report.images
        ],
    }
    if with_config:
        config = kernel.config
        report["config"] = config.source if config is not None else None
    return report


def _kernel_setting(spec: str | None) -> tuple[str, SpecSource]:
    """The kernel named on the command line; for ``locate`` without one, $KTSTR_KERNEL, else
    the running kernel. A SPEC given empty is passed on to be refused: a script whose variable
    is unset must not be shown another kernel."""
    if spec is not None:
        return spec, SpecSource.ARGUMENT
    env = [(SpecSource.ENV, os.environ.get("KTSTR_KERNEL"))]
    return select_setting(env) or (RUNNING, SpecSource.DEFAULT)


def _fail(error: Exception, prog: str) -> int:
    # A missing vmlinux comes with the probe report, a candidate a line, as locate prints it.
    message = str(error) if isinstance(error, VmlinuxNotFoundError) else _one_line(error)
    return _error(message, prog)


def _error(message: str, prog: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_BAD


def lock_timeout() -> float:
    """$KTSTR_LOCK_TIMEOUT, as the plugin reads it; ValueError naming it when it is not one."""
    raw = os.environ.get(ENV_LOCK_TIMEOUT, "")
    if not raw.strip():
        return DEFAULT_LOCK_TIMEOUT
    try:
        return parse_lock_timeout(raw)
    except ValueError as e:
        raise ValueError(f"${ENV_LOCK_TIMEOUT}: {e}") from None


def _notice(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _one_line(error: Exception) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(text).split())


def _fetch_options(prog: str) -> FetchOptions:
    """Fetching as the plugin does: $KTSTR_KERNEL_OFFLINE, progress on stderr."""
    raw = os.environ.get(ENV_OFFLINE, "")
    offline = parse_offline(raw, f"${ENV_OFFLINE}")
    progress = TerminalProgress(_to_stderr, tty=sys.stderr.isatty(), prefix=prog)
    return FetchOptions(offline=offline, progress=progress)


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _kernels(remove: str | None, cache_dir: str | None, prog: str, *, as_json: bool) -> int:
    try:
        store = _open_cache(cache_dir, prog)
        if remove is not None:
            remove_kernel(store, remove)
        else:
            list_kernels(store, as_json=as_json)
    except (KernelArtifactError, ValueError) as e:
        return _fail(e, prog)
    return EXIT_OK


def _open_cache(cache_dir: str | None, prog: str) -> ArtifactStore:
    """The store named by --cache-dir > $KTSTR_CACHE_DIR > the default (ValueError: a bad
    argument or setting)."""
    if cache_dir is not None and not cache_dir.strip():
        raise ValueError(f"--cache-dir {cache_dir!r} is empty; name a directory")
    directory = Path(cache_dir or os.environ.get(ENV_CACHE_DIR) or default_store_dir())
    notice = functools.partial(_notice, prog)
    return ArtifactStore(directory, lock_timeout=lock_timeout(), on_lock_wait=notice)


def _cache(action: str, cache_dir: str | None, prog: str, *, as_json: bool) -> int:
    if cache_dir is not None and not cache_dir.strip():
        return _error(f"--cache-dir {cache_dir!r} is empty; name a directory", prog)
    directory = Path(cache_dir or os.environ.get(ENV_CACHE_DIR) or default_store_dir())
    if action == "path":
        print(directory)
        return 0
    try:
        store = _open_cache(cache_dir, prog)
        if action == "clear":
            print(f"removed {store.clear()} artifacts from {store.directory}")
            return 0
    except (KernelArtifactError, ValueError) as e:  # ValueError: a bad $KTSTR_LOCK_TIMEOUT
        return _fail(e, prog)
    entries = store.entries()
    if as_json:
        listing = {"store": str(store.directory), "size": store.total_size(), "sources": entries}
        print(json.dumps(listing, indent=2))
        return 0
    print(f"store {store.directory} ({store.total_size() / 2**20:.1f} MiB)")
    for entry in entries:
        print(entry["source"])
        for item in entry["artifacts"]:
            print(
                f"  {item['kind']} v{item['version']}: {item['size'] / 2**20:.1f} MiB,"
                f" built {item['builds']}x, {item['file']}"
            )
    return 0
