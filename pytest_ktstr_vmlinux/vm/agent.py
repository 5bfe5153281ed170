"""The guest side: the initramfs's /init and the command agent, busybox shell scripts.

Debian's cloud kernels have no virtio-console or 9p built in, only the 8250 UART, and under TCG
an emulated UART moves about 50 KB/s. So the second serial port (ttyS1) carries only short
ASCII request and reply lines, and every payload (long commands, command output, file contents)
goes through the transfer window: guest RAM reserved with ``memmap=`` that the agent reads and
writes through /dev/mem and the host through its mapping of guest RAM (``layout.py``). Payloads
are raw bytes of a stated length, so binary output and NUL bytes survive.

The guest is root and may run a broken kernel: anything on the line or in the window may come
from a stranger. So every request names its sequence number and its own length (a cut line is
refused), every reply starts with ``@ktstr`` (stray bytes before it on the line are skipped by
the host), and every payload in the window is a frame the other side checks: the agent's frames
end with a trailer naming the request, the lengths and the CRC-32s (busybox ``crc32``, zlib's
polynomial) of the payload; the host's frames are checked by CRC-32 before a script runs, or
compared whole after the agent answered (``framing.py``). The window belongs to the agent from a
request until its reply, to the host otherwise; the host never sends a request while an
earlier one is unanswered (``requests.py``), which is why no late write can land on a new frame.

Requests (host to guest), one line each, ``OP SEQ LEN BODY`` where LEN is BODY's length:

    C SEQ LEN TEXT           run TEXT (printable ASCII)
    R SEQ LEN FLEN SLEN CRC  run the SLEN-byte script at window offset 0; the frame (FLEN bytes:
                             the script, then "ktstr R SEQ SLEN" and a newline) has CRC-32 CRC
    W SEQ LEN PLEN PCRC DLEN OFF MODE [PATH]
                             write DLEN bytes (window offset PLEN) at byte OFF of the file at
                             PATH, or when PLEN is not 0 at the PLEN-byte path at window offset
                             0 (CRC-32 PCRC); OFF 0 creates or truncates it (and its
                             directories); then chmod MODE (octal)
    G SEQ LEN PLEN PCRC OFF MAX COPY [PATH]
                             copy up to MAX bytes of that file from byte OFF into the window
                             (files under /proc and /sys are first copied whole); a whole file
                             is read in place unless COPY is 1: then, as for a range, a copy of
                             the range is made first, so that it cannot change under the CRC
    K SEQ                    stop request SEQ: kill what it runs (and everything under it),
                             then answer it (the reader turns this into SIGUSR1; a SIGUSR1
                             from anyone else is ignored)

A PATH on the request line is printable ASCII without spaces; others go through the window.

Replies (guest to host), each ``@ktstr `` and then:

    READY PROTOCOL           the agent is up
    D SEQ STATUS OLEN ELEN   command done. Unless both are 0, the window holds stdout (OLEN
                             bytes), stderr (ELEN) and the trailer line "ktstr D SEQ STATUS OLEN
                             ELEN OCRC ECRC"; unless OLEN + ELEN exceeds the window's room: then
                             the host reads /run/ktstr/out.SEQ and /run/ktstr/err.SEQ with G
    T SEQ - OLEN ELEN        the output so far of a command that K stopped, the same way
    A SEQ                    a W request is done
    S SEQ SIZE N             a G request: the file has SIZE bytes; N of them are in the window,
                             then the trailer "ktstr S SEQ SIZE N CRC"
    E SEQ MESSAGE            the request failed (no such file, the filesystem is full, a damaged
                             request, stopped); SEQ is - when the request had none

Each command runs as ``sh -c`` would run it, in a subshell of the agent that first forgets the
agent's functions and variables (a fork, without the exec of a new shell: under TCG the exec is
the larger cost), with stdin /dev/null, in /, as root. Its output goes to files, not pipes, so
a command may leave background work running. The files are on a tmpfs of their own
(/run/ktstr), so what commands write elsewhere cannot starve them, and are emptied at the next
request that is not the host fetching them.
"""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

from .errors import GuestUnavailableError

PROTOCOL = 2
AGENT_PATH = "ktstr/agent"
RUN_DIR = "/run/ktstr"
# The longest command sent inline on the request line (read a byte at a time: longer ones cost
# more than their trip through the window); the tty's line buffer holds 4095 bytes.
INLINE_MAX = 256
# The end of the window kept for a frame's trailer line.
TRAILER_ROOM = 128
REPLY_MARKER = "@ktstr "
# The applets the agent runs (busybox 1.32 or later has them all; crc32 came last).
APPLETS = ("cat", "chmod", "crc32", "dd", "mkdir", "rm", "stat", "stty", "truncate")

# Mounted by /init, each table by one process: a process costs most of a boot's last second
# under TCG. The second needs the mount points the first one's devtmpfs lacks.
FSTAB = (
    "proc /proc proc defaults 0 0\n"
    "sysfs /sys sysfs defaults 0 0\n"
    "devtmpfs /dev devtmpfs defaults 0 0\n"
)
# cgroup v2 too: sched_ext's cgroup-aware schedulers (scx_flatcg) work on its hierarchy.
FSTAB_DEV = (
    "devpts /dev/pts devpts defaults 0 0\n"
    "tmpfs /dev/shm tmpfs defaults 0 0\n"
    "cgroup2 /sys/fs/cgroup cgroup2 defaults 0 0\n"
    f"tmpfs {RUN_DIR} tmpfs mode=0700 0 0\n"
)
FSTAB_PATH, FSTAB_DEV_PATH = "ktstr/fstab", "ktstr/fstab.dev"
REQUESTS_FIFO = "ktstr/requests"  # not under RUN_DIR: its tmpfs would hide it

INIT = r"""#!/bin/busybox sh
# PID 1 of a ktstr-vmlinux guest: the API filesystems, then the agent.
/bin/busybox mount -a -T /ktstr/fstab
/bin/busybox mkdir /dev/pts /dev/shm
/bin/busybox mount -a -T /ktstr/fstab.dev
# The initramfs has busybox's applet links, unless busybox could not run on the host.
[ -e /bin/sh ] || /bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
# As an initramfs's init hands over to the real one: init=PATH runs that instead of the agent.
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in init=*) exec "${arg#init=}" ;; esac
done
. /ktstr/agent
echo "ktstr: the agent stopped; powering off"
poweroff -f
"""

_AGENT = r"""# The ktstr-vmlinux agent: requests on ttyS1, payloads through the transfer window.
set -f
R=/run/ktstr
CH=/dev/ttyS1
T=@TRAILER@
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in
        ktstr.window=*) w=${arg#ktstr.window=}; WIN=$((${w%,*})); SIZE=$((${w#*,})) ;;
    esac
done
CAP=$((SIZE - T))
# Canonical input without echo or special characters; output without CR insertion.
stty -F $CH 115200 -echo -echoe -echok -echoctl -echoke -icrnl -ixon -isig -iexten -opost icanon
exec 3>$CH
exec 4<>/@FIFO@
agent=$$ stop= keep=
trap 'stop=1' USR1
# Written in place, never truncated: a stop must get through even when $R is full.
echo 0000000000000000000 >$R/stop
# The reader: request lines from the tty to the agent, through a fifo, because the agent waits
# for each request; a K line (stop that request) is a SIGUSR1 that ends the wait, and names the
# request in $R/stop, so that a SIGUSR1 a command sends to its shell's $$ stops nothing. Shell
# builtins only: no process per request. (Not cat: it splices, and a splice into a pipe holds
# the pipe's lock while it waits for the tty, locking the agent out.)
while IFS= read -r l; do
    case $l in
        "K "*) echo "${l#K }" 1<>$R/stop; kill -USR1 $agent ;;
        *) echo "$l" >&4 ;;
    esac
done <$CH 3>&- &

say() {  # the reply line
    echo "@MARKER@$*" >&3
}
waitfor() {  # SEQ PID: 0 when the job ended (its status in $status), 1 when K SEQ stopped it
    local s
    while :; do
        wait $2
        status=$?
        kill -0 $2 2>/dev/null || return 0
        [ -n "$stop" ] || continue
        stop= s=
        read -r s <$R/stop
        if [ "$s" = "$1" ]; then
            killtree $2
            wait $2 2>/dev/null
            return 1
        fi
    done
}
reap() {  # PID: wait for it, whatever signal comes
    while :; do
        wait $1
        kill -0 $1 2>/dev/null || return 0
    done
}
killtree() {  # PID: it and every process under it, each stopped before its children are listed
    local c
    kill -STOP $1 2>/dev/null || return 0
    for c in $(set +f; cat /proc/$1/task/*/children 2>/dev/null); do killtree $c; done
    kill -KILL $1
}
towin() {  # FILE WINDOW-OFFSET BYTES [FILE-OFFSET]
    dd if="$1" of=/dev/mem bs=1M count=$3 skip=${4:-0} seek=$((WIN + $2)) \
        iflag=count_bytes,skip_bytes oflag=seek_bytes conv=notrunc 2>$R/msg
}
full() {  # SEQ WHAT: when $R is full, say so (after WHAT) for request SEQ, and succeed
    set -- "$1" "$2" $(stat -f -c '%a %b %S' $R)
    [ "$3" = 0 ] || return 1
    say E $1 "$2the guest's filesystem for $R is full (it holds $(($4 * $5 >> 10)) KiB)"
}
fail() {  # SEQ [WHAT]: the request failed; the reason is the first line of $R/msg
    local msg
    full $1 "$2" && return
    IFS= read -r msg <$R/msg
    say E $1 "${msg:-failed}"
}
winpath() {  # PLEN CRC: the path the host put at window offset 0, into $p; 1 when damaged
    dd if=/dev/mem of=$R/path bs=$1 count=1 skip=$WIN iflag=skip_bytes 2>/dev/null
    set -- $1 $2 $(crc32 $R/path)
    p=
    IFS= read -r p <$R/path
    [ "$3" = "$2" ]
}
damaged() {  # SEQ WHAT
    say E $1 "damaged request: $2 in the transfer window does not match its checksum"
}
checksum() {  # FILE BYTES: the CRC-32 of FILE into $c, while its first BYTES go into the window
    local pid
    crc32 "$1" >$R/sum &
    pid=$!
    towin "$1" 0 $2
    reap $pid
    read -r c _ <$R/sum
}
# What a command's subshell forgets of the agent before it runs the command.
FORGET='unset -f say waitfor reap killtree towin full fail winpath damaged checksum run finish
unset -f script put get
unset R CH T WIN SIZE CAP agent stop keep status line op r seq len p cmdline arg w f c got
unset FORGET
set +f; set --;'
run() {  # SEQ TEXT: one subshell per command, no exec (under TCG an exec costs two forks)
    local seq=$1
    ( eval "$FORGET" "$2" ) >$R/out.$seq 2>$R/err.$seq </dev/null 3>&- 4>&- &
    if waitfor $seq $!; then finish D $seq $status; else finish T $seq -; fi
}
finish() {  # KIND SEQ STATUS: report a command's output, framed in the window when it fits
    local kind=$1 seq=$2 st=$3 o=$R/out.$2 e=$R/err.$2 ol=0 el=0 t
    if [ -s $o ] || [ -s $e ]; then
        keep="$o $e"
        set -- $(stat -c %s $o $e; crc32 $o $e)
        ol=$1 el=$2 t="ktstr $kind $seq $st $ol $el $3 $5"
    elif [ "$st" != 0 ] && { [ ! -f $o ] || [ ! -f $e ]; }; then
        full $seq "the command's output files could not be made: " ||
            say E $seq "the command's output files could not be made in $R"
        return
    fi
    # A command that failed, or wrote a lot, may have failed for want of room.
    if [ "$st" != 0 ] || [ $((ol + el)) -gt $CAP ]; then
        full $seq "the output of the command (status $st) could not all be stored: " && return
    fi
    if [ $((ol + el)) = 0 ] || [ $((ol + el)) -gt $CAP ]; then
        say $kind $seq $st $ol $el
    elif [ $el = 0 ]; then  # the trailer goes after the last part, in the same copy
        echo "$t" >>$o && towin $o 0 $((ol + ${#t} + 1)) && say $kind $seq $st $ol $el ||
            fail $seq
    else
        echo "$t" >>$e && { [ $ol = 0 ] || towin $o 0 $ol; } &&
            towin $e $ol $((el + ${#t} + 1)) && say $kind $seq $st $ol $el || fail $seq
    fi
}
script() {  # SEQ FLEN SLEN CRC: check the frame at window offset 0, then run its script
    local c=$R/cmd.$1
    dd if=/dev/mem of=$c bs=1M count=$2 skip=$WIN iflag=count_bytes,skip_bytes 2>$R/msg ||
        { fail $1; return; }
    set -- $1 $2 $3 $4 $(crc32 $c)
    if [ "$5" != "$4" ]; then
        : >$c
        damaged $1 "the script"
        return
    fi
    truncate -s $3 $c 2>$R/msg || { fail $1; return; }
    run $1 ". $c"
    : >$c
}
put() {  # SEQ PLEN PCRC DLEN OFF MODE [PATH]
    local seq=$1 d
    if [ $2 = 0 ]; then p=$7; else winpath $2 $3 || { damaged $seq "the path"; return; }; fi
    if [ -e "$p" ] && [ ! -f "$p" ]; then
        say E $seq "$p: not a regular file"
        return
    fi
    if [ $5 = 0 ]; then
        d=${p%/*}
        [ -z "$d" ] || [ -d "$d" ] || mkdir -p "$d" 2>$R/msg || { fail $seq; return; }
        : 2>$R/msg >"$p" || { fail $seq; return; }
    fi
    dd if=/dev/mem of="$p" bs=1M count=$4 skip=$((WIN + $2)) seek=$5 \
        iflag=count_bytes,skip_bytes oflag=seek_bytes conv=notrunc 2>$R/msg &
    waitfor $seq $! || { say E $seq "stopped"; return; }
    [ $status = 0 ] || { fail $seq; return; }
    chmod $6 "$p" 2>$R/msg || { fail $seq; return; }
    say A $seq
}
get() {  # SEQ PLEN PCRC OFF MAX COPY [PATH]
    local seq=$1 off=$4 max=$5 f size n src
    if [ $2 = 0 ]; then p=$7; else winpath $2 $3 || { damaged $seq "the path"; return; }; fi
    f=$p
    case $p in
        /proc/*|/sys/*)
            f=$R/get
            keep="$keep $f"
            if [ $off = 0 ]; then
                cat "$p" 2>$R/msg >$f &
                waitfor $seq $! || { : >$f; say E $seq "stopped"; return; }
                [ $status = 0 ] || { fail $seq "$p could not be copied: "; : >$f; return; }
            fi ;;
    esac
    if [ ! -f "$f" ]; then
        if [ -e "$f" ]; then
            say E $seq "$p: not a regular file"
        else
            say E $seq "$p: no such file"
        fi
        return
    fi
    size=$(stat -c %s "$f")
    n=$((size - off))
    [ $n -le $max ] || n=$max
    [ $n -le $CAP ] || n=$CAP
    if [ $n -le 0 ]; then
        say S $seq $size 0
        return
    fi
    src=$R/chunk got=$n
    if [ $n = $size ] && [ $6 = 0 ]; then  # all of it, in place (should it change meanwhile,
        checksum "$f" $n                 # the host sees the CRC disagree and asks for a COPY)
        src=
    fi
    if [ -n "$src" ]; then
        # A copy of the range: crc32 reads whole files, and a file that changes must not make
        # the CRC and the window disagree (a file that shrank gives fewer bytes).
        dd if="$f" of=$src bs=1M skip=$off count=$n iflag=skip_bytes,count_bytes 2>$R/msg &
        waitfor $seq $! || { : >$src; say E $seq "stopped"; return; }
        [ $status = 0 ] || { fail $seq; : >$src; return; }
        got=$(stat -c %s $src)
        checksum $src $got
        : >$src
    fi
    echo "ktstr S $seq $size $got $c" >$R/trailer
    towin $R/trailer $got $T && say S $seq $size $got || fail $seq
    [ "$f" != $R/get ] || [ $((off + n)) -lt $size ] || : >$f
}

say READY @PROTOCOL@
while IFS= read -r line <&4; do
    op=${line%% *} r=${line#* }
    seq=${r%% *} r=${r#* }
    len=${r%% *} r=${r#"$len"}
    r=${r# }
    stop=
    case $seq in ""|*[!0-9]*) say E - "malformed request"; continue ;; esac
    case $len in ""|*[!0-9]*) say E $seq "malformed request"; continue ;; esac
    if [ ${#r} != $len ]; then
        say E $seq "damaged request: its line was cut"
        continue
    fi
    if [ $op != G ]; then  # the host has what it wanted of earlier requests' files
        for f in $keep; do : >$f; done
        keep=
        if [ $((seq % 64)) = 0 ]; then  # and their emptied files go
            set +f
            rm -f $R/out.* $R/err.* $R/cmd.*
            set -f
        fi
    fi
    case $op in
        C) run $seq "$r" ;;
        R) script $seq $r ;;
        W) put $seq $r ;;
        G) get $seq $r ;;
        *) say E $seq "unknown request $op" ;;
    esac
done
"""
AGENT = (
    _AGENT.replace("@TRAILER@", str(TRAILER_ROOM))
    .replace("@FIFO@", REQUESTS_FIFO)
    .replace("@MARKER@", REPLY_MARKER)
    .replace("@PROTOCOL@", str(PROTOCOL))
)


def check_applets(busybox: Path, applets: Set[str], package: str) -> None:
    """GuestUnavailableError naming what ``busybox`` lacks of what the agent runs; nothing when
    its applets are unknown (a busybox that cannot run on this host)."""
    names = {a.rsplit("/", 1)[-1] for a in applets}
    if not {"sh", "env"} < names:
        return
    missing = [a for a in APPLETS if a not in names]
    if missing:
        raise GuestUnavailableError(
            f"{busybox} has no {', '.join(missing)} applet: the guest's agent needs it (busybox"
            f" 1.32 or later has every one); install a newer {package}",
            (package,),
        )
