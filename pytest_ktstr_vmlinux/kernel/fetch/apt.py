"""Debian's own client on lists of our own: apt verifies, we only ask and download.

An apt root is a private directory of the store (``Trees.state_dir``) holding ``sources.list``
(the suites it follows), ``lists/`` (apt's package lists), ``cache/`` (apt's cache directory)
and ``check/`` (InRelease files fetched to see whether a suite moved). The sources file sits
beside ``lists/``, not in it: ``apt-get update`` removes from its lists directory every file it
does not know. Nothing of the machine's apt state is read or written (sources, source parts,
preferences and the dpkg status are ours or /dev/null). The machine's apt configuration still
applies, so its proxy and timeouts are used; what would weaken verification is forced off, and
the machine's update hooks (``APT::Update::Post-Invoke-Success``: PackageKit's, for one) are
cleared by ``apt.conf`` beside the sources: our lists are none of the machine's business.

apt checks the archive's signature over each InRelease file and every list's hash against it,
and each downloaded package's SHA256 against its list: a package apt hands over is the one the
archive signed. The only bytes read here that apt did not verify are fresh InRelease files
compared with the verified ones, to learn whether ``apt-get update`` has anything to do: equal
bytes are the verified bytes, and different bytes only make apt update and verify.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...store.files import publish
from .process import ToolError, last_lines, run, spawn, stop

APT_GET = "apt-get"
APT_CACHE = "apt-cache"
APT_HELPER = "/usr/lib/apt/apt-helper"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Read after the machine's configuration (apt -c): hooks the machine runs on its own updates.
APT_CONF = b"""\
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
"""
# How often a download in progress is looked at, for the progress shown.
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class AptSource:
    """One suite of one archive, main component: a line of the sources file."""

    uri: str  # http://deb.debian.org/debian
    suite: str

    def line(self, keyring: str) -> str:
        return f"deb [signed-by={keyring}] {self.uri} {self.suite} main\n"

    @property
    def inrelease_uri(self) -> str:
        return f"{self.uri}/dists/{self.suite}/InRelease"

    @property
    def list_name(self) -> str:
        """The name apt gives the verified InRelease in its lists directory: the URI without
        its scheme, ``/`` made ``_`` (apt's URItoFileName, for URIs of plain characters)."""
        return self.inrelease_uri.split("://", 1)[-1].replace("/", "_")


@dataclass(frozen=True)
class PackageRecord:
    """What the lists say of one version of a package."""

    name: str
    version: str
    size: int
    sha256: str
    depends: tuple[tuple[str, str | None], ...]  # (name, version when "= version"), flattened


class Unreachable(Exception):
    """The archive could not be asked (no network, a proxy refusing): ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AptRoot:
    """The private apt state of one set of suites for one architecture."""

    def __init__(
        self, directory: Path, sources: Sequence[AptSource], arch: str, tools: dict[str, str]
    ) -> None:
        self.directory = directory
        self.sources = tuple(sources)
        self.arch = arch
        self._tools = tools
        self._sources_file = directory / "sources.list"
        self._conf_file = directory / "apt.conf"
        self._lists = directory / "lists"
        self._cache = directory / "cache"
        self._check = directory / "check"

    def options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": str(self._sources_file),
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": str(self._lists),
            "Dir::State::status": "/dev/null",
            "Dir::Cache": str(self._cache),
            # apt's binary cache of the lists makes each later query a hundredth of a second
            # instead of a second of parsing; the source cache would only double its size.
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "Acquire::Languages": "none",
            "Acquire::AllowInsecureRepositories": "false",
            "Acquire::AllowDowngradeToInsecureRepositories": "false",
            "APT::Get::AllowUnauthenticated": "false",
        }
        if os.geteuid() == 0:
            # apt would drop to its _apt user, who cannot enter a store that is ours alone.
            settings["APT::Sandbox::User"] = "root"
        return [f"-c{self._conf_file}", *(f"-o{key}={value}" for key, value in settings.items())]

    def _prepare(self) -> None:
        for path in (self._lists, self._lists / "partial", self._cache / "archives" / "partial"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = "".join(source.line(KEYRING) for source in self.sources).encode()
        for path, data in ((self._sources_file, text), (self._conf_file, APT_CONF)):
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                current = b""
            if current != data:
                publish(path, data, tmp_dir=self.directory, prefix="conf-")

    def update(self) -> dict[str, str | None]:
        """``apt-get update``: lists fetched and verified. The SHA-256 of each source's verified
        InRelease, by URI (None where apt keeps it under a name not known here)."""
        self._prepare()
        try:
            # --error-on=any: a list that could not be fetched is an error, not a warning
            # after which apt would go on with the old one.
            argv = [self._tools[APT_GET], *self.options(), "-q", "update", "--error-on=any"]
            run(argv, "apt-get update")
        except ToolError as e:
            if _network_failure(e.output):
                raise Unreachable(last_lines(e.output)) from None
            raise
        return self.verified_releases()

    def verified_releases(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for source in self.sources:
            try:
                found[source.inrelease_uri] = _sha256(self._lists / source.list_name)
            except OSError:
                found[source.inrelease_uri] = None
        return found

    def moved(self, recorded: dict[str, str | None]) -> bool:
        """Whether any suite's InRelease differs from the ``recorded`` verified ones (one
        request per suite, through apt's own downloader and configuration). Unreachable when
        the archive cannot be asked."""
        if set(recorded) != {s.inrelease_uri for s in self.sources}:
            return True
        self._prepare()
        self._check.mkdir(mode=0o700, parents=True, exist_ok=True)
        pairs: list[str] = []
        targets = [self._check / f"{os.getpid()}-{i}.InRelease" for i in range(len(self.sources))]
        for source, target in zip(self.sources, targets, strict=True):
            target.unlink(missing_ok=True)
            pairs += [source.inrelease_uri, str(target)]
        argv = [self._tools[APT_HELPER], *self.options(), "-oAcquire::Retries=0", "-q"]
        try:
            run([*argv, "download-file", *pairs], "apt-helper download-file")
        except ToolError as e:
            raise Unreachable(last_lines(e.output)) from None
        try:
            fresh = [_sha256(target) for target in targets]
        except OSError:
            return True
        finally:
            for target in targets:
                target.unlink(missing_ok=True)
        return any(recorded[s.inrelease_uri] != h for s, h in zip(self.sources, fresh, strict=True))

    def probe(self, uris: Sequence[str]) -> dict[str, bytes | None]:
        """Fetch small files (InRelease of suites that may not exist): their bytes, or None for
        those the archive does not have. Unreachable when it cannot be asked at all."""
        self._prepare()
        self._check.mkdir(mode=0o700, parents=True, exist_ok=True)
        found: dict[str, bytes | None] = {}
        for index, uri in enumerate(uris):
            target = self._check / f"{os.getpid()}-probe-{index}"
            target.unlink(missing_ok=True)
            argv = [self._tools[APT_HELPER], *self.options(), "-oAcquire::Retries=0", "-q"]
            try:
                run([*argv, "download-file", uri, str(target)], "apt-helper download-file")
            except ToolError as e:
                if _network_failure(e.output) or "404" not in e.output:
                    raise Unreachable(last_lines(e.output)) from None
                found[uri] = None
                continue
            found[uri] = target.read_bytes()
            target.unlink()
        return found

    def show(self, packages: Sequence[str], *, all_versions: bool) -> list[PackageRecord]:
        """The lists' records of ``packages`` (the candidate version of each, or every version);
        those the lists do not have are left out."""
        self._prepare()
        argv = [self._tools[APT_CACHE], *self.options(), "show"]
        if not all_versions:
            argv.append("--no-all-versions")
        try:
            out = run([*argv, *packages], "apt-cache show")
        except ToolError as e:
            if "No packages found" in e.output:
                return []
            raise
        return [r for r in (_record(p) for p in out.split("\n\n")) if r is not None]

    def names(self, prefix: str) -> list[str]:
        """Every package name in the lists that starts with ``prefix``."""
        self._prepare()
        out = run([self._tools[APT_CACHE], *self.options(), "pkgnames", prefix], "apt-cache")
        return sorted(set(out.split()))

    def download(
        self,
        records: Sequence[PackageRecord],
        directory: Path,
        report: Callable[[str, int, int, float], None],
    ) -> dict[str, Path]:
        """``apt-get download`` of exactly these versions into ``directory``; apt checks each
        against its list's SHA256. ``report(package, bytes so far, size, seconds)`` is called
        as the files grow. The downloaded file of each package, by name."""
        self._prepare()
        wanted = [f"{r.name}={r.version}" for r in records]
        log = directory / "apt-get.log"
        with open(log, "wb") as out:
            process = spawn(
                [self._tools[APT_GET], *self.options(), "-q", "download", *wanted],
                cwd=directory,
                stdout=out,
                stderr=out,
            )
            try:
                _watch(process, records, directory, report)
            except BaseException:
                stop(process)
                raise
        output = log.read_text(errors="replace")
        if process.returncode != 0:
            if _network_failure(output):
                raise Unreachable(last_lines(output))
            raise ToolError("apt-get download", process.returncode, output)
        files = {}
        for record in records:
            path = deb_path(directory, record)
            if path is None:
                raise ToolError("apt-get download", 0, f"no file for {record.name} in {directory}")
            files[record.name] = path
        return files


def _watch(
    process: subprocess.Popen[bytes],
    records: Sequence[PackageRecord],
    directory: Path,
    report: Callable[[str, int, int, float], None],
) -> None:
    """Report each package's file as it grows, until apt-get exits."""
    started: dict[str, float] = {}
    finished: set[str] = set()
    while True:
        try:
            process.wait(POLL_SECONDS)
            done = True
        except subprocess.TimeoutExpired:
            done = False
        now = time.monotonic()
        for record in records:
            if record.name in finished:
                continue
            path = deb_path(directory, record)
            if path is None:
                continue
            size = path.stat().st_size
            # It appeared since the last look: count its time from then.
            began = started.setdefault(record.name, now - POLL_SECONDS)
            report(record.name, size, record.size, now - began)
            if size >= record.size:
                finished.add(record.name)
        if done:
            return


def deb_path(directory: Path, record: PackageRecord) -> Path | None:
    # apt-get download names the file NAME_VERSION_ARCH.deb, the epoch's ':' quoted as %3a.
    version = record.version.replace(":", "%3a")
    for path in directory.glob(f"{record.name}_{version}_*.deb"):
        return path
    return None


def _record(paragraph: str) -> PackageRecord | None:
    fields: dict[str, str] = {}
    key = None
    for line in paragraph.splitlines():
        if line.startswith((" ", "\t")) and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    name, version = fields.get("Package"), fields.get("Version")
    if not name or not version:
        return None
    try:
        size = int(fields.get("Size", "0"))
    except ValueError:
        size = 0
    depends = tuple(
        _relation(alternative)
        for clause in fields.get("Depends", "").split(",")
        for alternative in clause.split("|")
        if alternative.strip()
    )
    return PackageRecord(name, version, size, fields.get("SHA256", ""), depends)


def _relation(text: str) -> tuple[str, str | None]:
    """``linux-image-R (= 7.2.13-1)`` -> (name, "7.2.13-1"); other relations give no version."""
    name, _, rest = text.partition("(")
    operator, _, version = rest.rstrip(") ").partition(" ")
    return name.split(":")[0].strip(), version.strip() if operator == "=" else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_NETWORK_WORDS = (
    "Could not connect",
    "Could not resolve",
    "Temporary failure resolving",
    "Connection failed",
    "Connection refused",
    "Connection timed out",
    "Network is unreachable",
    "No route to host",
    "503",
    "502",
    "Bad Gateway",
    "Service Unavailable",
)


def _network_failure(output: str) -> bool:
    return any(word in output for word in _NETWORK_WORDS)
