"""The guest side: the initramfs's /init and the command agent, busybox shell scripts.

Debian's cloud kernels have no virtio-console or 9p built in, only the 8250 UART, and under TCG
an emulated UART moves about 50 KB/s. So the second serial port (ttyS1) carries only short
ASCII request and reply lines, and every payload (long commands, command output, file contents)
goes through the transfer window: guest RAM reserved with ``memmap=`` that the agent reads and
writes through /dev/mem and the host through its mapping of guest RAM (layout.py). Payloads
are raw bytes of a stated length, so binary output and NUL bytes survive.

Requests (host to guest), one line each; SEQ numbers every request, and its reply repeats it:

    C SEQ TEXT               run TEXT (printable ASCII) with sh -c
    R SEQ LEN                run the LEN-byte script at window offset 0
    K SEQ                    command SEQ timed out: report its output so far
    W SEQ PLEN DLEN OFF MODE write DLEN bytes (window offset PLEN) at byte OFF of the file whose
                             path is the PLEN bytes at window offset 0; OFF 0 creates or
                             truncates it (and its directories); then chmod MODE (octal)
    G SEQ PLEN OFF           copy up to the window's size of that file from byte OFF into the
                             window (files under /proc and /sys are first copied whole)

Replies (guest to host):

    READY PROTOCOL           the agent is up
    D SEQ STATUS OLEN ELEN   command done: stdout and stderr are at window offsets 0 and OLEN,
                             unless OLEN + ELEN exceeds the window: then the host reads the files
                             /run/ktstr/out.SEQ and /run/ktstr/err.SEQ with G
    T SEQ - OLEN ELEN        the output so far of a command that timed out, the same way
    A SEQ                    a W request is done
    S SEQ SIZE N             a G request: the file has SIZE bytes, N of them are in the window
    E SEQ MESSAGE            a W or G request failed (no such file, ...)

Commands run in their own session (setsid), with stdin /dev/null, in /, as root; each command's
output goes to files, so a command may leave background work running.
"""

from __future__ import annotations

PROTOCOL = 1
AGENT_PATH = "ktstr/agent"
RUN_DIR = "/run/ktstr"
# The longest command sent inline on the request line; the tty's line buffer holds 4095 bytes.
INLINE_MAX = 1024

INIT = r"""#!/bin/busybox sh
# PID 1 of a ktstr-vmlinux guest: the API filesystems, busybox's applets, then the agent.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
# As an initramfs's init hands over to the real one: init=PATH runs that instead of the agent.
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in init=*) exec "${arg#init=}" ;; esac
done
/bin/sh /ktstr/agent
echo "ktstr: the agent exited with status $?; powering off"
poweroff -f
"""

AGENT = r"""# The ktstr-vmlinux agent: requests on ttyS1, payloads through the transfer window.
set -f
R=/run/ktstr
CH=/dev/ttyS1
mkdir -p $R
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case $arg in
        ktstr.window=*) w=${arg#ktstr.window=}; WIN=$((${w%,*})); SIZE=$((${w#*,})) ;;
    esac
done
# Canonical input without echo or special characters; output without CR insertion.
stty -F $CH 115200 -echo -echoe -echok -echoctl -echoke -icrnl -ixon -isig -iexten -opost icanon
exec 3>$CH
mkfifo $R/events
exec 4<>$R/events
# One read per line in canonical mode: each request is one write into the event fifo, never
# torn by the completions that commands post there. Not cat: it splices, and a splice into a
# pipe holds the pipe's lock while it waits for the tty, locking out the reader.
dd if=$CH bs=4096 2>/dev/null >&4 3>&- &

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
    rm -f $R/path
    fromwin $R/path 0 $1
    p=
    IFS= read -r p < $R/path
}
start() {  # SEQ, then sh's arguments
    local seq=$1
    shift
    rm -f $R/out.$last $R/err.$last $R/cmd.$last
    last=$seq running=$seq
    ( setsid sh "$@" >$R/out.$seq 2>$R/err.$seq </dev/null 3>&- 4>&-; echo "X $seq $?" >&4 ) 3>&- &
    pid=$!
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
    running=
    echo "$kind $seq $status $ol $el" >&3
}
put() {  # SEQ PLEN DLEN OFF MODE
    local d
    winpath $2
    if [ $4 = 0 ]; then
        d=${p%/*}
        [ -z "$d" ] || [ -d "$d" ] || mkdir -p "$d" 2>$R/msg || { fail $1; return; }
        : 2>$R/msg >"$p" || { fail $1; return; }
    fi
    fromwin "$p" $2 $3 $4 || { fail $1; return; }
    chmod $5 "$p" 2>$R/msg || { fail $1; return; }
    echo "A $1" >&3
}
get() {  # SEQ PLEN OFF
    local f size n
    winpath $2
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

last=0 running= pid=
echo "READY 1" >&3
while IFS= read -r line <&4; do
    op=${line%% *}
    args=${line#"$op"}
    args=${args# }
    case $op in
        C) seq=${args%% *}; start "$seq" -c "${args#"$seq" }" ;;
        R) set -- $args; rm -f $R/cmd.$1; fromwin $R/cmd.$1 0 $2 && start $1 $R/cmd.$1 ;;
        X) set -- $args; if [ "$1" = "$running" ]; then wait $pid; finish D $1 $2; fi ;;
        K) set -- $args; [ "$1" != "$running" ] || finish T $1 - ;;
        W) put $args ;;
        G) get $args ;;
        *) echo "E - unknown request: $op" >&3 ;;
    esac
done
"""
