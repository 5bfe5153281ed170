"""The guest side: the initramfs's /init and the command agent, busybox shell scripts.

Debian's cloud kernels have no virtio-console or 9p built in, only the 8250 UART, and under TCG
an emulated UART moves about 50 KB/s. So the second serial port (ttyS1) carries only short
ASCII request and reply lines, and every payload (long commands, command output, file contents)
goes through the transfer window: guest RAM reserved with ``memmap=`` that the agent reads and
writes through /dev/mem and the host through its mapping of guest RAM (``layout.py``). Payloads
are raw bytes of a stated length, so binary output and NUL bytes survive.

Requests (host to guest), one line each; SEQ numbers every request, and its reply repeats it:

    C SEQ TEXT               run TEXT (printable ASCII)
    R SEQ LEN                run the LEN-byte script at window offset 0
    K SEQ                    command SEQ timed out: report its output so far (the agent is
                             waiting for the command; the reader turns this into SIGUSR1)
    W SEQ PLEN DLEN OFF MODE [PATH]
                             write DLEN bytes (window offset PLEN) at byte OFF of the file at
                             PATH, or when PLEN is not 0 at the PLEN-byte path at window offset
                             0; OFF 0 creates or truncates it (and its directories); then chmod
                             MODE (octal)
    G SEQ PLEN OFF [PATH]    copy up to the window's size of that file from byte OFF into the
                             window (files under /proc and /sys are first copied whole)

A PATH on the request line is printable ASCII without spaces; others go through the window.

Replies (guest to host):

    READY PROTOCOL           the agent is up
    D SEQ STATUS OLEN ELEN   command done: stdout and stderr are at window offsets 0 and OLEN,
                             unless OLEN + ELEN exceeds the window: then the host reads the files
                             /run/ktstr/out.SEQ and /run/ktstr/err.SEQ with G
    T SEQ - OLEN ELEN        the output so far of a command that timed out, the same way
    A SEQ                    a W request is done
    S SEQ SIZE N             a G request: the file has SIZE bytes, N of them are in the window
    E SEQ MESSAGE            a W or G request failed (no such file, ...)

Each command runs as ``sh -c`` would run it, in a subshell of the agent that first forgets the
agent's functions and variables (a fork, without the exec of a new shell: under TCG the exec is
the larger cost), with stdin /dev/null, in /, as root. Its output goes to files, not pipes, so
a command may leave background work running.
"""

from __future__ import annotations

PROTOCOL = 1
AGENT_PATH = "ktstr/agent"
RUN_DIR = "/run/ktstr"
# The longest command sent inline on the request line (read a byte at a time: longer ones cost
# more than their trip through the window); the tty's line buffer holds 4095 bytes.
INLINE_MAX = 256

# Mounted by /init, each table by one process: a process costs most of a boot's last second
# under TCG. The second needs the mount points the first one's devtmpfs lacks.
FSTAB = (
    "proc /proc proc defaults 0 0\n"
    "sysfs /sys sysfs defaults 0 0\n"
    "devtmpfs /dev devtmpfs defaults 0 0\n"
)
# cgroup v2 too: sched_ext's cgroup-aware schedulers (scx_flatcg) work on its hierarchy.
FSTAB_DEV = (
    "devpts /dev/pts devpts defaults 0 0\ntmpfs /dev/shm tmpfs defaults 0 0\n"
    "cgroup2 /sys/fs/cgroup cgroup2 defaults 0 0\n"
)
FSTAB_PATH, FSTAB_DEV_PATH = "ktstr/fstab", "ktstr/fstab.dev"
REQUESTS_FIFO = "run/ktstr/requests"

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

AGENT = r"""# The ktstr-vmlinux agent: requests on ttyS1, payloads through the transfer window.
set -f
R=/run/ktstr
CH=/dev/ttyS1
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in
        ktstr.window=*) w=${arg#ktstr.window=}; WIN=$((${w%,*})); SIZE=$((${w#*,})) ;;
    esac
done
# Canonical input without echo or special characters; output without CR insertion.
stty -F $CH 115200 -echo -echoe -echok -echoctl -echoke -icrnl -ixon -isig -iexten -opost icanon
exec 3>$CH
exec 4<>$R/requests
agent=$$ timedout=
trap 'timedout=1' USR1
# The reader: request lines from the tty to the agent, through a fifo, because the agent waits
# for each command; a K line (that command timed out) is a SIGUSR1, which ends that wait. Shell
# builtins only: no process per request. (Not cat: it splices, and a splice into a pipe holds
# the pipe's lock while it waits for the tty, locking the agent out.)
while IFS= read -r l; do
    case $l in
        "K "*) kill -USR1 $agent ;;
        *) echo "$l" >&4 ;;
    esac
done <$CH 3>&- &

towin() {  # FILE WINDOW-OFFSET BYTES [FILE-OFFSET]
    dd if="$1" of=/dev/mem bs=1M count=$3 skip=${4:-0} seek=$((WIN + $2)) \
        iflag=count_bytes,skip_bytes oflag=seek_bytes conv=notrunc 2>$R/msg
}
fromwin() {  # FILE WINDOW-OFFSET BYTES [FILE-OFFSET]
    dd if=/dev/mem of="$1" bs=1M count=$3 skip=$((WIN + $2)) seek=${4:-0} \
        iflag=count_bytes,skip_bytes oflag=seek_bytes conv=notrunc 2>$R/msg
}
fail() {  # SEQ: the request failed; the reason is the first line of $R/msg
    local msg
    IFS= read -r msg < $R/msg
    echo "E $1 ${msg:-failed}" >&3
}
winpath() {  # PLEN: the path at window offset 0, into $p
    dd if=/dev/mem of=$R/path bs=$1 count=1 skip=$WIN iflag=skip_bytes 2>/dev/null
    p=
    IFS= read -r p < $R/path
}
# What a command's subshell forgets of the agent before it runs the command.
FORGET='unset -f towin fromwin fail winpath run finish put get
unset R CH WIN SIZE agent timedout line op args seq status p cmdline arg w FORGET
set +f; set --;'
run() {  # SEQ TEXT: one subshell per command, no exec (under TCG an exec costs two forks)
    local seq=$1 status
    if [ $((seq % 64)) = 0 ]; then  # the output of earlier commands
        set +f
        rm -f $R/out.* $R/err.* $R/cmd.*
        set -f
    fi
    timedout=
    ( eval "$FORGET" "$2" ) >$R/out.$seq 2>$R/err.$seq </dev/null 3>&- 4>&- &
    wait $!
    status=$?
    if [ -n "$timedout" ]; then finish T $seq -; else finish D $seq $status; fi
}
finish() {  # KIND SEQ STATUS: report a command's output, in the window when it fits
    local o=$R/out.$2 e=$R/err.$2 ol=0 el=0 kind=$1 seq=$2 status=$3
    if [ -s $o ] || [ -s $e ]; then
        set -- $(stat -c %s $o $e)
        ol=${1:-0} el=${2:-0}
        if [ $((ol + el)) -le $SIZE ]; then
            [ $ol = 0 ] || towin $o 0 $ol
            [ $el = 0 ] || towin $e $ol $el
        fi
    fi
    echo "$kind $seq $status $ol $el" >&3
}
put() {  # SEQ PLEN DLEN OFF MODE [PATH]
    local d
    if [ $2 = 0 ]; then p=$6; else winpath $2; fi
    if [ $4 = 0 ]; then
        d=${p%/*}
        [ -z "$d" ] || [ -d "$d" ] || mkdir -p "$d" 2>$R/msg || { fail $1; return; }
        : 2>$R/msg >"$p" || { fail $1; return; }
    fi
    fromwin "$p" $2 $3 $4 || { fail $1; return; }
    chmod $5 "$p" 2>$R/msg || { fail $1; return; }
    echo "A $1" >&3
}
get() {  # SEQ PLEN OFF [PATH]
    local f size n
    if [ $2 = 0 ]; then p=$4; else winpath $2; fi
    f=$p
    case $p in
        /proc/*|/sys/*)
            f=$R/get
            [ $3 != 0 ] || cat "$p" 2>$R/msg >$f || { fail $1; return; } ;;
    esac
    if [ ! -f "$f" ]; then
        if [ -e "$f" ]; then echo "E $1 $p: not a regular file" >&3
        else echo "E $1 $p: no such file" >&3; fi
        return
    fi
    size=$(stat -c %s "$f")
    n=$((size - $3))
    [ $n -le $SIZE ] || n=$SIZE
    [ $n -ge 0 ] || n=0
    [ $n = 0 ] || towin "$f" 0 $n $3 || { fail $1; return; }
    echo "S $1 $size $n" >&3
}

echo "READY 1" >&3
while IFS= read -r line <&4; do
    op=${line%% *}
    args=${line#"$op"}
    args=${args# }
    case $op in
        C) seq=${args%% *}; run "$seq" "${args#"$seq" }" ;;
        R) set -- $args; if fromwin $R/cmd.$1 0 $2; then run $1 ". $R/cmd.$1"; else fail $1; fi ;;
        W) put $args ;;
        G) get $args ;;
        *) echo "E - unknown request: $op" >&3 ;;
    esac
done
"""
