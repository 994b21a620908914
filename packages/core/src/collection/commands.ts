/**
 * The commands kay sends to a host (docs/collection-protocol.md). Nothing is installed on the host: each string
 * is the exec request itself, and sshd runs it as `$SHELL -c '<string>'`, where the login shell may be bash,
 * dash, zsh, busybox sh — or fish, tcsh or csh, which parse quotes, `!`, `$` and newlines differently. So every
 * command kay sends for itself is a POSIX sh script handed to `sh` in the one form all of those shells run the
 * same way ({@link forAnyLoginShell}); inside it:
 *
 * - the one-shot commands use only POSIX sh syntax (no word splitting of unquoted variables, no globs outside
 *   `case` patterns, no `local`, no arrays);
 * - the stream loops `exec` a known interpreter (`bash`, `perl`, `sh`) and pass the script as ONE single-quoted
 *   argument, so sh only sees `exec <interp> -c '<script>' kay <token>`. The scripts therefore contain no single
 *   quote at all (checked at module load), and the token travels as an argument, not as text spliced into the
 *   script.
 */

import { randomBytes } from 'node:crypto'
import { ConfigError, InternalError, type KayError, UnexpectedOutputError } from '../errors.js'
import type { CollectMode, StreamFlavour } from '../types.js'
import {
  DISK_DEVICES_EXCLUDE,
  FS_TYPES_EXCLUDE,
  MOUNT_POINTS_EXCLUDE,
  UDEV_KEYS,
  VMSTAT_FIELDS,
} from './node-families.js'

// ------------------------------------------------------------------------------------------------------------------
// One command form for every login shell

/**
 * What the login shell runs: `sh`, given the script's pieces as arguments; sh glues them together, turns the
 * escapes back into bytes with `printf %b` and runs the result with `eval`, so the script's `$1`… are the arguments
 * after the pieces. It contains none of the characters a login shell treats differently (below).
 */
const DECODER = 'n=$1;shift;s=;while [ $n -gt 0 ];do s=$s$1;shift;n=$((n-1));done;eval "$(printf %b "$s")"'

/**
 * Inside single quotes, bash, dash, zsh and busybox sh keep every character but `'`; fish also turns `\\` and
 * `\'` into one character; csh and tcsh expand `!` (history, even under `-c`) and reject a newline. So the script
 * travels with those four characters written as `printf %b` octal escapes (`\0ooo`, which every one of those
 * shells keeps as it is). Any other backslash is escaped too, so `printf %b` gives back exactly the script.
 */
const NOT_SAFE_IN_QUOTES = /[\\'!\n]/g

/** `/bin/sh` by its path: the login shell's PATH (set by its own start-up files, fish's and csh's too) plays no part. */
const WRAPPED_HEAD = `exec /bin/sh -c '${DECODER}' kay `

/** bsd-csh refuses a word longer than ~8 KiB ("Word too long"): the script travels in pieces of this size. */
const PIECE_CHARS = 4000

/**
 * `script` (POSIX sh) as a command that every login shell sshd may run it under — bash, dash, zsh, busybox sh,
 * fish, tcsh, csh — runs the same way: `exec /bin/sh -c '<decoder>' kay <n> '<piece>'… <args>`. `args` are words made
 * only of `[A-Za-z0-9_.,:=/+-]` (they are passed unquoted); inside the script they are `$1`, `$2`…
 */
export function forAnyLoginShell(script: string, args: readonly string[] = []): string {
  for (const a of args) {
    if (!/^[A-Za-z0-9_.,:=/+-]+$/.test(a)) throw new ConfigError(`login-shell argument needs quoting: ${a}`)
  }
  const encoded = script.replace(NOT_SAFE_IN_QUOTES, (c) => `\\0${c.charCodeAt(0).toString(8).padStart(3, '0')}`)
  const pieces: string[] = []
  for (let i = 0; i < encoded.length; i += PIECE_CHARS) pieces.push(`'${encoded.slice(i, i + PIECE_CHARS)}'`)
  return [`${WRAPPED_HEAD}${pieces.length}`, ...pieces, ...args].join(' ')
}

const OCTAL_ESCAPE = /\\0([0-7]{3})/g

/** The script inside a command made by {@link forAnyLoginShell} (undefined for any other command). */
export function scriptOf(command: string): string | undefined {
  if (!command.startsWith(WRAPPED_HEAD)) return undefined
  const m = /^(\d+) /.exec(command.slice(WRAPPED_HEAD.length))
  if (!m) return undefined
  let rest = command.slice(WRAPPED_HEAD.length + m[0].length)
  let encoded = ''
  for (let n = Number(m[1]); n > 0; n--) {
    const end = rest.indexOf("'", 1)
    if (!rest.startsWith("'") || end < 0) return undefined
    encoded += rest.slice(1, end)
    rest = rest.slice(end + 2)
  }
  return encoded.replace(OCTAL_ESCAPE, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)))
}

// ------------------------------------------------------------------------------------------------------------------
// The scripts

/** The interpreters a stream loop can run under (`python` runs `python3`). */
export type { StreamFlavour }

/** Probe order, cheapest host CPU first: the first flavour whose first frame arrives intact wins. */
export const STREAM_FLAVOURS: readonly StreamFlavour[] = ['perl', 'python', 'awk', 'bash', 'sh']

/** Every collect mode: each stream flavour's, then exec (a new channel per tick). */
export const COLLECT_MODES: readonly CollectMode[] = [...STREAM_FLAVOURS.map((f) => `stream-${f}` as const), 'exec']

/** Whether `x` names a stream flavour. */
function isStreamFlavour(x: unknown): x is StreamFlavour {
  return typeof x === 'string' && (STREAM_FLAVOURS as readonly string[]).includes(x)
}

/** The tick's /proc files; its netdev section follows the interface rule below. */
const PROC_FILES = 'loadavg meminfo stat uptime'
const DETAIL_PROC_FILES = 'stat meminfo loadavg uptime net/dev'
const PS = 'ps -eo pid,user,pcpu,pmem,rss,comm --sort=-pcpu'

/**
 * The network interfaces a tick counts (every loop and the exec command use this rule): those of /sys/class/net
 * that have a device, i.e. are not under /sys/devices/virtual/net, and whose byte counters can be read. Their
 * counters go into the netdev section as `<name>: <rx_bytes> 0 0 0 0 0 0 0 <tx_bytes>` lines (the fields the
 * parser reads of /proc/net/dev's format). With no such interface (a container as the target, no /sys) the section
 * is /proc/net/dev itself. Two sysfs counters per interface stay cheap on a container node, where /proc/net/dev is
 * formatted anew for each of its hundreds of veths on every read (ADR 0007), and counting only devices also stops
 * container traffic from being counted twice (on the NIC and on its veth).
 * The loops find the interfaces once, when they start; the exec command on every run. Names that begin with a dot
 * are left out by all of them, as a shell glob and `ls` leave them out.
 *
 * SH_NET_FIND (POSIX sh): sets p to the interfaces' names, space separated (names have no blanks).
 */
const SH_NET_FIND =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'p=;for f in /sys/class/net/*;do v=${f##*/};[ -e "/sys/devices/virtual/net/$v" ]||' +
  '{ [ -r "$f/statistics/rx_bytes" ]&&[ -r "$f/statistics/tx_bytes" ]&&p="$p $v";};done;'

/** POSIX sh, the body of a loop over interface names in v: prints v's netdev line (skips it if unreadable). */
const SH_NET_LINE =
  'r=;w=;read r 2>/dev/null <"/sys/class/net/$v/statistics/rx_bytes";' +
  'read w 2>/dev/null <"/sys/class/net/$v/statistics/tx_bytes";' +
  'case $r in ""|*[!0-9]*) continue;;esac;case $w in ""|*[!0-9]*) continue;;esac;' +
  'printf "%s: %s 0 0 0 0 0 0 0 %s\\n" "$v" "$r" "$w";'

/**
 * Prints `@@kay <name>\n<content>\n` per /proc file. `$(cat …)` strips trailing newlines and printf adds exactly
 * one, so every header starts a line whatever the source ends with; a missing file gives an empty section.
 */
function shProcLoop(files: string): string {
  return (
    `for f in ${files};do x=$(cat /proc/$f 2>/dev/null);` +
    `case $f in net/dev) n=netdev;;*) n=$f;;esac;printf '@@kay %s\\n%s\\n' "$n" "$x";done`
  )
}

/** The netdev section of a one-shot command (the interface rule above; /proc/net/dev where no interface has a device). */
const SH_NETDEV_SECTION =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  ';x=$(for f in /sys/class/net/*;do v=${f##*/};[ -e "/sys/devices/virtual/net/$v" ]&&continue;' +
  SH_NET_LINE +
  'done 2>/dev/null);[ -n "$x" ]||x=$(cat /proc/net/dev 2>/dev/null);printf \'@@kay netdev\\n%s\\n\' "$x"'

/**
 * One-shot collection (exec mode, the fallback when no stream flavour works): sections loadavg meminfo stat
 * uptime netdev df (`df -P /`), then exit 0. It runs in the login shell, which may be zsh: zsh does not split an
 * unquoted `$p`, so the interfaces are walked with the glob itself rather than with SH_NET_FIND's list.
 */
const COLLECT_SCRIPT =
  ': kay-collect v1;' +
  shProcLoop(PROC_FILES) +
  SH_NETDEV_SECTION +
  `;x=$(df -P / 2>/dev/null);printf '@@kay df\\n%s\\n' "$x"`

/**
 * One-shot drill-in detail: sections stat meminfo loadavg uptime netdev df (`df -P`, all filesystems: `-x` is
 * not portable) and ps (the 20 busiest processes; GNU ps `--sort`, an empty section where ps lacks it).
 */
const DETAIL_SCRIPT =
  ': kay-detail v1;' +
  shProcLoop(DETAIL_PROC_FILES) +
  `;x=$(df -P 2>/dev/null);printf '@@kay df\\n%s\\n' "$x"` +
  `;x=$(${PS} 2>/dev/null|head -n 21);printf '@@kay ps\\n%s\\n' "$x"`

/** {@link COLLECT_SCRIPT} as sent: runs the same under every login shell. */
export const COLLECT_COMMAND = forAnyLoginShell(COLLECT_SCRIPT)

/** {@link DETAIL_SCRIPT} as sent: runs the same under every login shell. */
export const DETAIL_COMMAND = forAnyLoginShell(DETAIL_SCRIPT)

// The stream loops. Each reads request lines `<seq>[ df][ node][ slow]` from stdin (the words in that order),
// ignores anything else, answers with the sections (docs/collection-protocol.md) then `@@kay-end <token> <seq>`, and
// exits 0 at stdin EOF. `$1` / `$ARGV[0]` is the token. `df` asks for the root filesystem's df line; `node` for
// the node_exporter sources (whole meminfo and stat, /proc/net/dev, vmstat, file-nr, pressure, diskstats, the
// host's clock); `slow` (with `node`) for the ones read less often (mounts and their statfs, uname, os-release,
// udev). A node section whose source cannot be read is left out.

/** Shell double-quoted form of `s` (for regexes the bash and sh loops hold in variables or pass to awk). */
function shDq(s: string): string {
  return `"${s.replace(/[\\"$`]/g, '\\$&')}"`
}

/** The diskstats exclusion as a POSIX ERE (awk and bash have no `\d`). */
const DISK_EXCLUDE_ERE = DISK_DEVICES_EXCLUDE.replaceAll('\\d', '[0-9]')
/** An `E:` line of a udev data file that carries one of the properties the parser reads (group 1: `KEY=value`). */
const UDEV_LINE = `^E:((${UDEV_KEYS.join('|')})=.*)`

/**
 * Shared request-line parsing for the shell loops: sets s (seq), d (df), n (node), w (slow), each non-empty when
 * asked for; anything but `<digits>[ df][ node][ slow]` is skipped.
 */
const SH_REQUEST =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'd=;n=;w=;s=$l;case $s in *" slow") s=${s% slow};w=1;;esac;case $s in *" node") s=${s% node};n=1;;esac;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'case $s in *" df") s=${s% df};d=1;;esac;case $s in ""|*[!0-9]*) continue;;esac;'

/**
 * bash: each file read by the `read` builtin (no fork per file). `read -d` returns 1 at EOF with the content
 * complete, so it is never a loop condition; the frame is built in one string and written by one printf.
 * bash's `read` costs CPU per character, so in a table request two files stop early at a delimiter character:
 * /proc/stat at the first `i` (its cpu lines hold only `cpu`, digits and blanks; the `intr` line after them is the
 * longest in the file), /proc/meminfo at the first `Z` (the `Zswap` lines of newer kernels come after MemTotal…
 * SwapFree; a kernel without them is read whole). Each read stops before a line start, so the parser sees the same
 * lines as from the whole file. A node request reads them whole with `mapfile -d ""` (cheaper per character than
 * `read`), and its other files whole too (filtering lines in bash costs more than sending them: the parser applies
 * node_exporter's filters), but for vmstat: only its lines node_exporter keeps, by indices found once (a quarter of
 * the frame otherwise). The reads are written out rather
 * than looped over: the loop's per-file bookkeeping cost as much as the reads. stderr is sent to /dev/null once
 * for the whole loop rather than per file: a per-file `2>/dev/null` doubled the system calls of every read.
 * A slow request forks `stat -f` once for all mounts (bash cannot call statfs) and, the first time, `uname -m`.
 * The loop runs in the C locale: in a UTF-8 one bash spends about a third more on the same bytes.
 */
const BASH_LOOP =
  'LC_ALL=C;t=$1;printf -v nl "\\n";printf -v tb "\\t";exec 2>/dev/null;' +
  `DX=${shDq(DISK_EXCLUDE_ERE)};MX=${shDq(MOUNT_POINTS_EXCLUDE)};FX=${shDq(FS_TYPES_EXCLUDE)};M=;` +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'V=();for f in /sys/class/net/*;do v=${f##*/};' +
  '[[ -e /sys/devices/virtual/net/$v || ! -r $f/statistics/rx_bytes || ! -r $f/statistics/tx_bytes ]]||V+=("$v");done;' +
  // The kernel's list of vmstat fields is fixed while it runs: the lines node_exporter keeps are found once.
  // bash compiles a regex at every `=~` (~60 µs for these): the slow sections' verdicts on mounts and disks are kept
  // (emptied past 1,000 entries), and a udev line's key is looked up in an associative array.
  `declare -A MC DC UK;for z in ${UDEV_KEYS.join(' ')};do UK[$z]=1;done;` +
  `VX=${shDq(VMSTAT_FIELDS)};VI=();VN=0;i=0;while read -r q1 q2;do [[ $q1 =~ $VX ]]&&{ VI+=($i);VN=$((i+1));};((i++));done </proc/vmstat;` +
  // Appends section $1 with content $2 to o (left out when empty; a newline added when the content lacks one).
  'sec(){ [[ -n $2 ]]||return;o+="@@kay $1$nl$2";[[ $2 == *"$nl" ]]||o+=$nl;};' +
  'while IFS= read -r l;do ' +
  SH_REQUEST +
  'a=;b=;c=;u=;p=;x=;' +
  'IFS= read -r -d "" a </proc/loadavg;' +
  'if [[ -n $n ]];then mapfile -d "" Q </proc/meminfo&&b=$Q;mapfile -d "" Q </proc/stat&&c=$Q;' +
  'else IFS= read -r -d Z b </proc/meminfo;IFS= read -r -d i c </proc/stat;fi;' +
  'IFS= read -r -d "" u </proc/uptime;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  '[[ -z $n && ${#V[@]} -gt 0 ]]||{ mapfile -d "" Q </proc/net/dev&&p=$Q;};' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'if ((${#V[@]}));then for v in "${V[@]}";do r=;w2=;' +
  'read -r r </sys/class/net/$v/statistics/rx_bytes;read -r w2 </sys/class/net/$v/statistics/tx_bytes;' +
  '[[ -n $r && -n $w2 && $r != *[!0-9]* && $w2 != *[!0-9]* ]]&&x+="$v: $r 0 0 0 0 0 0 0 $w2$nl";done;' +
  'elif [[ -z $n ]];then x=$p;fi;' +
  // A pattern test costs per character: the node request's whole /proc files (mapfile) end with a newline already.
  '[[ $a == *"$nl" ]]||a+=$nl;[[ -n $n ]]||{ [[ $b == *"$nl" ]]||b+=$nl;[[ $c == *"$nl" ]]||c+=$nl;};[[ $u == *"$nl" ]]||u+=$nl;' +
  'o="@@kay loadavg$nl$a@@kay meminfo$nl$b@@kay stat$nl$c@@kay uptime$nl$u";' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'if [[ -z $n || ${#V[@]} -gt 0 ]];then [[ $x == *"$nl" ]]||x+=$nl;o+="@@kay netdev$nl$x";fi;' +
  'if [[ -n $n ]];then [[ -n $p ]]&&o+="@@kay procnetdev$nl$p";x=;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'for f in /sys/class/net/*;do v=${f##*/};[[ $v == lo ]]&&continue;r=;' +
  'read -r r <$f/statistics/rx_nohandler&&[[ -n $r && $r != *[!0-9]* ]]&&x+="$v $r$nl";done;sec nohandler "$x";' +
  // vmstat: only the lines node_exporter keeps, by the indices found when the loop started (mapfile -n stops after
  // the last of them). The other whole files are appended straight from mapfile's array (no function argument,
  // no pattern test: /proc's seq files end every line with a newline); an empty or missing one is left out.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  '((VN))&&mapfile -t -n $VN Q </proc/vmstat&&{ x=;for i in "${VI[@]}";do x+="${Q[i]}$nl";done;o+="@@kay vmstat$nl$x";};' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'mapfile -d "" Q </proc/sys/fs/file-nr&&((${#Q[@]}))&&o+="@@kay filefd$nl$Q";' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'for r in cpu io memory;do mapfile -d "" Q </proc/pressure/$r&&((${#Q[@]}))&&o+="@@kay psi-$r$nl$Q";done;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'k=;mapfile -d "" Q </proc/diskstats&&((${#Q[@]}))&&{ k=$Q;o+="@@kay diskstats$nl$k";};' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'x=$EPOCHREALTIME;[[ -n $x ]]||printf -v x "%(%s)T" -1;o+="@@kay time$nl${x/,/.}$nl";fi;' +
  'if [[ -n $d ]];then x=$(df -P /);o+="@@kay df$nl$x$nl";fi;' +
  // The slow sources are walked as mapfile arrays split into words with globbing off: a `while read` over a
  // here-string reads a pipe one byte per system call.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'if [[ -n $n && -n $w ]];then L=();mapfile -t L </proc/1/mounts;((${#L[@]}))||mapfile -t L </proc/self/mounts;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'P=();y=;set -f;for x in "${L[@]}";do q=($x);[[ -n ${q[3]} ]]||continue;v=${q[1]//\\\\040/ };v=${v//\\\\011/$tb};' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'c="${q[2]} $v";r=${MC[$c]};if [[ -z $r ]];then ((${#MC[@]}<1000))||MC=();r=1;[[ $v =~ $MX || ${q[2]} =~ $FX ]]&&r=0;MC[$c]=$r;fi;' +
  '((r))||continue;y+="$x$nl";P+=("$v");done;set +f;sec mounts "$y";' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'x=;((${#P[@]}))&&x=$(stat -f -c "%s %b %f %a %c %d %n" -- "${P[@]}");sec statfs "$x";' +
  '[[ -n $M ]]||M=$(uname -m);y=;for r in ostype hostname osrelease version;do x=;read -r x </proc/sys/kernel/$r;y+="$x$nl";done;' +
  'x=;read -r x </proc/sys/kernel/domainname;o+="@@kay uname$nl$y$M$nl$x$nl";' +
  'x=;mapfile -d "" Q </etc/os-release&&x=$Q;[[ -n $x ]]||{ mapfile -d "" Q </usr/lib/os-release&&x=$Q;};sec osrelease "$x";' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'y=;L=();mapfile -t L </proc/diskstats;set -f;for x in "${L[@]}";do q=($x);[[ -n ${q[2]} ]]||continue;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'r=${DC[${q[2]}]};if [[ -z $r ]];then ((${#DC[@]}<1000))||DC=();r=1;[[ ${q[2]} =~ $DX ]]&&r=0;DC[${q[2]}]=$r;fi;((r))||continue;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'U=();mapfile -t U </run/udev/data/b${q[0]}:${q[1]};for z in "${U[@]}";do [[ $z == E:?*=* ]]||continue;e=${z#E:};' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  '[[ -n ${UK[${e%%=*}]} ]]&&y+="${q[0]}:${q[1]} $e$nl";done;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'done;set +f;sec udev "$y";y=;for f in /sys/class/net/*;do y+=${f##*/};for r in operstate address broadcast duplex ifalias;do ' +
  'x=;read -r x <$f/$r;y+="$tb$x";done;y+=$nl;done;sec netclass "$y";y=;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'for f in /sys/devices/system/clocksource/clocksource*;do x=;read -r x <$f/current_clocksource||[[ -n $x ]]||continue;r=;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'read -r r <$f/available_clocksource;y+="${f##*clocksource}$tb$x$tb$r$nl";done;sec clocksource "$y";' +
  'printf -v x "%(%Z %z)T" -1;o+="@@kay tz$nl$x$nl";fi;' +
  'printf "%s@@kay-end %s %s\\n" "$o" "$t" "$s";' +
  'done;exit 0'

/**
 * perl: the /proc files are opened once, when the loop starts, and each request rewinds them (`sysseek` to 0
 * regenerates a /proc file) and reads them with sysread; one syswrite per frame: opening per request was most of
 * the loop's host CPU (ADR 0004). A table request sends only what the table's
 * parser reads: /proc/stat up to the end of its cpu lines, /proc/meminfo up to SReclaimable. A node request sends
 * them whole but for the long `intr` line, cut to its total, and leaves out the vmstat fields, block devices and
 * mounts node_exporter leaves out. A file that cannot be opened gives an empty table section or no node section.
 *
 * Where the syscall numbers and the 64-bit layouts are known (x86_64, aarch64, riscv64; s390x, for one, has a
 * 32-bit f_type and f_bsize, so it is not in the list) the loop calls statfs(2) (the df section and the mounts'
 * statfs lines), gettimeofday(2) (the clock) and uname(2) through perl's `syscall`, with no fork. Elsewhere, or if
 * a call fails, it forks `df -P /` or `stat -f` once per request that needs them, reads the clock with `time`
 * (whole seconds) and uname from /proc/sys/kernel plus one `uname -m`. The df section is printed as `df -P` prints
 * it (Use% rounded up, as coreutils does). A df fork would cost the host about as much as all the requests between
 * two df sections together (ADR 0004).
 */
const PERL_LOOP =
  String.raw`use Config;my %sc=(x86_64=>[137,96,63],aarch64=>[43,169,160],riscv64=>[43,169,160]);` +
  String.raw`my($ar)=$Config{archname}=~/^([^-]+)/;my($sn,$gn,$un)=$Config{ptrsize}==8&&$sc{$ar}?@{$sc{$ar}}:();` +
  `my $DX=qr{${DISK_DEVICES_EXCLUDE}};my $MX=qr{${MOUNT_POINTS_EXCLUDE}};my $FX=qr{${FS_TYPES_EXCLUDE}};` +
  `my $VX=qr{${VMSTAT_FIELDS}};my $UX=qr{${UDEV_LINE}};` +
  String.raw`sub sfs{return () unless defined $sn;my $b="\0"x512;return () unless syscall($sn,my $p=$_[0],$b)==0;my @v=unpack("q7",$b);@v[1..6]}` +
  String.raw`sub rootdf{my($bs,$bl,$bf,$ba)=sfs("/");if(defined $ba){my $u=$bl-$bf;my $t=$u+$ba;my $k=$bs/1024;` +
  String.raw`return sprintf("Filesystem 1024-blocks Used Available Capacity Mounted on\nrootfs %d %d %d %d%% /\n",` +
  String.raw`$bl*$k,$u*$k,$ba*$k,$t>0?int(($u*100+$t-1)/$t):0)}` +
  String.raw`my $y=qx(exec df -P / 2>/dev/null);$y.="\n" unless substr($y,-1) eq "\n";$y}` +
  String.raw`sub now{if(defined $gn){my $v="\0"x16;if(syscall($gn,$v,0)==0){my($s,$u)=unpack("q2",$v);return sprintf("%d.%06d\n",$s,$u)}}time."\n"}` +
  String.raw`sub slurp{my $h;open($h,"<",$_[0]) or return "";local $/;my $x=<$h>;close $h;defined $x?$x:""}` +
  String.raw`my $mach;sub uts{if(defined $un){my $v="\0"x390;if(syscall($un,$v)==0){return join("\n",unpack("Z65"x6,$v))."\n"}}` +
  String.raw`$mach=qx(exec uname -m 2>/dev/null) unless defined $mach;chomp(my $m=$mach);` +
  String.raw`my @k=map{my $x=slurp("/proc/sys/kernel/$_");chomp $x;$x}qw(ostype hostname osrelease version domainname);` +
  String.raw`join("\n",@k[0..3],$m,$k[4])."\n"}` +
  String.raw`my $t=shift;my %h;for my $f(qw(loadavg meminfo stat uptime net/dev vmstat sys/fs/file-nr pressure/cpu pressure/io pressure/memory diskstats)){` +
  String.raw`my $x;open($x,"<","/proc/$f") and $h{$f}=$x}` +
  String.raw`sub rd{my $x=$h{$_[0]};my $o="";return $o unless $x;sysseek($x,0,0);1 while sysread($x,$o,65536,length $o);$o}` +
  String.raw`sub nl{my $x=shift;$x.="\n" unless substr($x,-1) eq "\n";$x}sub sec{my($n,$x)=@_;$x eq ""?"":"\@\@kay $n\n".nl($x)}` +
  String.raw`my @v;if(opendir(my $D,"/sys/class/net")){for my $n(sort readdir $D){next if $n=~/^\./||-e "/sys/devices/virtual/net/$n";` +
  String.raw`my($r,$w);open($r,"<","/sys/class/net/$n/statistics/rx_bytes")&&open($w,"<","/sys/class/net/$n/statistics/tx_bytes")&&push @v,[$n,$r,$w]}closedir $D}` +
  String.raw`my %nh;while(defined(my $l=<STDIN>)){` +
  String.raw`next unless $l=~/\A(\d+)( df)?( node)?( slow)?\n?\z/;my($s,$d,$n,$w)=($1,$2,$3,$4);` +
  String.raw`my $m=rd("meminfo");unless($n){my $p=index($m,"\nSUnreclaim:");$m=substr($m,0,$p+1) if $p>=0}` +
  String.raw`my $c=rd("stat");if($n){$c=~s/^(intr \d+)[^\n]*/$1/m}else{my $p=index($c,"\nintr ");$c=substr($c,0,$p+1) if $p>=0}` +
  String.raw`my $o="\@\@kay loadavg\n".nl(rd("loadavg"))."\@\@kay meminfo\n".nl($m)."\@\@kay stat\n".nl($c)."\@\@kay uptime\n".nl(rd("uptime"));` +
  String.raw`my $nd=(!@v||$n)?rd("net/dev"):"";` +
  String.raw`if(@v){my $x="";for my $e(@v){my($q,$z)=("","");sysseek($$e[1],0,0);sysread($$e[1],$q,64);` +
  String.raw`sysseek($$e[2],0,0);sysread($$e[2],$z,64);chomp $q;chomp $z;$x.="$$e[0]: $q 0 0 0 0 0 0 0 $z\n" if $q=~/^\d+$/&&$z=~/^\d+$/}` +
  String.raw`$o.="\@\@kay netdev\n".nl($x)}elsif(!$n){$o.="\@\@kay netdev\n".nl($nd)}` +
  String.raw`my @dk;if($n){$o.=sec("procnetdev",$nd);my($x,%s)=("");` +
  String.raw`for my $i($nd=~/^\s*([^\s:|]+):/mg){next if $i eq "lo";$s{$i}=1;my $f=$nh{$i};` +
  String.raw`unless($f){open($f,"<","/sys/class/net/$i/statistics/rx_nohandler") or next;$nh{$i}=$f}` +
  String.raw`my $q="";sysseek($f,0,0);sysread($f,$q,64);chomp $q;$x.="$i $q\n" if $q=~/^\d+$/}` +
  String.raw`for(keys %nh){delete $nh{$_} unless $s{$_}}$o.=sec("nohandler",$x);` +
  String.raw`$o.=sec("vmstat",join("",grep{/^(\S+) /&&$1=~$VX}split(/^/m,rd("vmstat"))));` +
  String.raw`$o.=sec("filefd",rd("sys/fs/file-nr"));$o.=sec("psi-$_",rd("pressure/$_")) for qw(cpu io memory);` +
  String.raw`@dk=grep{/^\s*\d+\s+\d+\s+(\S+)/&&$1!~$DX}split(/^/m,rd("diskstats"));$o.=sec("diskstats",join("",@dk));` +
  String.raw`$o.="\@\@kay time\n".now()}` +
  String.raw`$o.="\@\@kay df\n".rootdf() if $d;` +
  String.raw`if($n&&$w){my $mt=slurp("/proc/1/mounts");$mt=slurp("/proc/self/mounts") if $mt eq "";my($mk,$sf,@p)=("","");` +
  String.raw`for(split(/^/m,$mt)){my @f=split;next unless @f>=4;(my $p=$f[1])=~s/\\040/ /g;$p=~s/\\011/\t/g;` +
  String.raw`next if $p=~$MX||$f[2]=~$FX;$mk.=$_;push @p,$p}` +
  String.raw`if(defined $sn){for my $p(@p){my @s=sfs($p);$sf.=join(" ",@s)." $p\n" if @s}}` +
  String.raw`elsif(@p&&open(my $S,"-|","stat","-f","-c","%s %b %f %a %c %d %n","--",@p)){local $/;my $y=<$S>;close $S;$sf=defined $y?$y:""}` +
  String.raw`$o.=sec("mounts",$mk).sec("statfs",$sf)."\@\@kay uname\n".uts();` +
  String.raw`my $r=slurp("/etc/os-release");$r=slurp("/usr/lib/os-release") if $r eq "";$o.=sec("osrelease",$r);` +
  String.raw`my $u="";for(@dk){my($ma,$mi)=/^\s*(\d+)\s+(\d+)/;for(split(/^/m,slurp("/run/udev/data/b$ma:$mi"))){$u.="$ma:$mi $1\n" if /$UX/}}` +
  String.raw`$o.=sec("udev",$u);my($nc,$cs,$cd)=("","","/sys/devices/system/clocksource");` +
  String.raw`if(opendir(my $D,"/sys/class/net")){for my $i(sort readdir $D){next if $i=~/^\./;` +
  String.raw`$nc.=join("\t",$i,map{my $x=slurp("/sys/class/net/$i/$_");$x=~s/\s+\z//;$x}qw(operstate address broadcast duplex ifalias))."\n"}closedir $D}` +
  String.raw`if(opendir(my $D,$cd)){for my $i(sort readdir $D){next unless $i=~/^clocksource(\d+)$/;my $k=$1;` +
  String.raw`my($c,$v)=map{my $x=slurp("$cd/$i/$_");$x=~s/\s+\z//;$x}qw(current_clocksource available_clocksource);$cs.="$k\t$c\t$v\n"}closedir $D}` +
  String.raw`require POSIX;$o.=sec("netclass",$nc).sec("clocksource",$cs)."\@\@kay tz\n".POSIX::strftime("%Z %z",localtime)."\n"}` +
  String.raw`syswrite(STDOUT,$o."\@\@kay-end $t $s\n")}exit 0`

/**
 * python: for hosts without perl that have python3 (RHEL minimal installs, many container images). Run with `-I -S`
 * (isolated: no PYTHON* variables, no user or site packages, so nothing on the host's path can change the loop).
 * Built like the perl loop: the /proc files are opened once and read with `os.pread` at offset 0 on each request
 * (which regenerates a /proc file), the same sections trimmed the same way, one write per frame (looped until
 * complete); statfs from `os.statvfs` (df printed as `df -P` prints it; it runs `df -P /` if the call fails), the
 * clock from `time.time()`, uname from `os.uname()`. Python 3.5 or newer (bytes `%` formatting); an older one fails
 * the probe's first request (it asks for df), and the next flavour is tried.
 */
const PYTHON_LOOP = [
  'import os,sys,re,time',
  't=sys.argv[1].encode()',
  `DX=re.compile(${JSON.stringify(DISK_DEVICES_EXCLUDE)}.encode());MX=re.compile(${JSON.stringify(MOUNT_POINTS_EXCLUDE)}.encode())`,
  `FX=re.compile(${JSON.stringify(FS_TYPES_EXCLUDE)}.encode());VX=re.compile(${JSON.stringify(VMSTAT_FIELDS)}.encode())`,
  `UX=re.compile(${JSON.stringify(UDEV_LINE)}.encode())`,
  String.raw`RQ=re.compile(rb"^(\d+)( df)?( node)?( slow)?\n?$")`,
  'def op(p):',
  ' try:return os.open(p,os.O_RDONLY)',
  ' except OSError:return -1',
  'P={}',
  'for n in ("loadavg","meminfo","stat","uptime","net/dev","vmstat","sys/fs/file-nr","pressure/cpu","pressure/io","pressure/memory","diskstats"):P[n]=op("/proc/"+n)',
  'V=[]',
  'try:N=sorted(os.listdir("/sys/class/net"))',
  'except OSError:N=[]',
  'for n in N:',
  ' if n[:1]=="." or os.path.exists("/sys/devices/virtual/net/"+n):continue',
  ' r=op("/sys/class/net/"+n+"/statistics/rx_bytes");w=op("/sys/class/net/"+n+"/statistics/tx_bytes")',
  ' if r>=0 and w>=0:V.append((n.encode(),r,w))',
  ' else:',
  '  for fd in (r,w):',
  '   if fd>=0:os.close(fd)',
  'def rd(fd):',
  ' if fd<0:return b""',
  ' b=[];n=0',
  ' while 1:',
  '  try:x=os.pread(fd,65536,n)',
  '  except OSError:return b""',
  '  if not x:return b"".join(b)',
  '  b.append(x);n+=len(x)',
  'def sl(p):',
  ' fd=op(p)',
  ' try:return rd(fd)',
  ' finally:',
  '  if fd>=0:os.close(fd)',
  String.raw`def nl(x):return x if x[-1:]==b"\n" else x+b"\n"`,
  String.raw`def sec(n,x):return b"@@kay "+n+b"\n"+nl(x) if x else b""`,
  String.raw`def cut(x,c):`,
  ' p=x.find(c)',
  ' return x[:p+1] if p>=0 else x',
  'def nd():',
  ' o=[]',
  ' for n,r,w in V:',
  '  q=rd(r).strip();z=rd(w).strip()',
  String.raw`  if q.isdigit() and z.isdigit():o.append(b"%s: %s 0 0 0 0 0 0 0 %s\n"%(n,q,z))`,
  ' return b"".join(o)',
  'def df():',
  ' try:v=os.statvfs("/")',
  ' except OSError:',
  '  y=os.popen("exec df -P / 2>/dev/null").read().encode()',
  String.raw`  return nl(y)`,
  ' f=v.f_frsize;u=v.f_blocks-v.f_bfree;s=u+v.f_bavail',
  String.raw` return b"Filesystem 1024-blocks Used Available Capacity Mounted on\nrootfs %d %d %d %d%% /\n"%(` +
    'v.f_blocks*f//1024,u*f//1024,v.f_bavail*f//1024,(u*100+s-1)//s if s>0 else 0)',
  'NH={};M=None',
  'for l in sys.stdin.buffer:',
  ' m=RQ.match(l)',
  ' if not m:continue',
  ' s,d,n,w=m.groups()',
  String.raw` o=[b"@@kay loadavg\n"+nl(rd(P["loadavg"]))]`,
  String.raw` x=rd(P["meminfo"]);o.append(b"@@kay meminfo\n"+nl(x if n else cut(x,b"\nSUnreclaim:")))`,
  ' x=rd(P["stat"])',
  String.raw` x=re.sub(rb"(?m)^(intr \d+)[^\n]*",rb"\1",x) if n else cut(x,b"\nintr ")`,
  String.raw` o.append(b"@@kay stat\n"+nl(x));o.append(b"@@kay uptime\n"+nl(rd(P["uptime"])))`,
  ' p=rd(P["net/dev"]) if n or not V else b""',
  String.raw` if V:o.append(b"@@kay netdev\n"+nl(nd()))`,
  String.raw` elif not n:o.append(b"@@kay netdev\n"+nl(p))`,
  ' dk=[]',
  ' if n:',
  '  o.append(sec(b"procnetdev",p));x=[];seen=set()',
  String.raw`  for i in re.findall(rb"(?m)^\s*([^\s:|]+):",p):`,
  '   if i==b"lo":continue',
  '   seen.add(i);fd=NH.get(i)',
  '   if fd is None:',
  '    fd=op(b"/sys/class/net/"+i+b"/statistics/rx_nohandler")',
  '    if fd<0:continue',
  '    NH[i]=fd',
  '   q=rd(fd).strip()',
  String.raw`   if q.isdigit():x.append(i+b" "+q+b"\n")`,
  '  for i in [k for k in NH if k not in seen]:os.close(NH.pop(i))',
  '  o.append(sec(b"nohandler",b"".join(x)))',
  String.raw`  o.append(sec(b"vmstat",b"".join(y+b"\n" for y in rd(P["vmstat"]).split(b"\n") if VX.match(y.split(b" ")[0]))))`,
  '  o.append(sec(b"filefd",rd(P["sys/fs/file-nr"])))',
  '  for r in ("cpu","io","memory"):o.append(sec(b"psi-"+r.encode(),rd(P["pressure/"+r])))',
  String.raw`  for y in rd(P["diskstats"]).split(b"\n"):`,
  '   q=y.split()',
  String.raw`   if len(q)>3 and not DX.match(q[2]):dk.append(y+b"\n")`,
  '  o.append(sec(b"diskstats",b"".join(dk)))',
  String.raw`  o.append(b"@@kay time\n"+(b"%.6f\n"%time.time()))`,
  String.raw` if d:o.append(b"@@kay df\n"+df())`,
  ' if n and w:',
  '  x=sl("/proc/1/mounts") or sl("/proc/self/mounts");mk=[];sf=[]',
  String.raw`  for y in x.split(b"\n"):`,
  '   q=y.split()',
  '   if len(q)<4:continue',
  String.raw`   mp=q[1].replace(b"\\040",b" ").replace(b"\\011",b"\t")`,
  '   if MX.match(mp) or FX.match(q[2]):continue',
  String.raw`   mk.append(y+b"\n")`,
  '   try:v=os.statvfs(mp)',
  '   except OSError:continue',
  String.raw`   sf.append(b"%d %d %d %d %d %d %s\n"%(v.f_bsize,v.f_blocks,v.f_bfree,v.f_bavail,v.f_files,v.f_ffree,mp))`,
  '  o.append(sec(b"mounts",b"".join(mk))+sec(b"statfs",b"".join(sf)))',
  '  u=os.uname()',
  String.raw`  o.append(b"@@kay uname\n"+b"\n".join(x.encode() for x in (u.sysname,u.nodename,u.release,u.version,u.machine))+b"\n"+nl(sl("/proc/sys/kernel/domainname")))`,
  '  o.append(sec(b"osrelease",sl("/etc/os-release") or sl("/usr/lib/os-release")))',
  '  x=[]',
  '  for y in dk:',
  '   q=y.split();k=q[0]+b":"+q[1]',
  String.raw`   for z in sl(b"/run/udev/data/b"+k).split(b"\n"):`,
  '    e=UX.match(z)',
  String.raw`    if e:x.append(k+b" "+e.group(1)+b"\n")`,
  '  o.append(sec(b"udev",b"".join(x)))',
  '  x=[];y=[];cd="/sys/devices/system/clocksource/"',
  '  try:N=sorted(os.listdir("/sys/class/net"))',
  '  except OSError:N=[]',
  '  for i in N:',
  '   if i[:1]!=".":x.append(b"\\t".join([i.encode()]+[sl("/sys/class/net/"+i+"/"+a).rstrip() for a in ("operstate","address","broadcast","duplex","ifalias")])+b"\\n")',
  '  try:N=sorted(os.listdir(cd))',
  '  except OSError:N=[]',
  '  for i in N:',
  '   if re.match(r"clocksource[0-9]+$",i):y.append(b"\\t".join([i[11:].encode(),sl(cd+i+"/current_clocksource").rstrip(),sl(cd+i+"/available_clocksource").rstrip()])+b"\\n")',
  String.raw`  o.append(sec(b"netclass",b"".join(x))+sec(b"clocksource",b"".join(y))+b"@@kay tz\n"+time.strftime("%Z %z").encode()+b"\n")`,
  String.raw` o.append(b"@@kay-end "+t+b" "+s+b"\n")`,
  ' m=memoryview(b"".join(o))',
  ' while m:m=m[os.write(1,m):]',
].join('\n')

/**
 * The awk program of the awk and sh loops. As the awk loop, one long-lived awk answers every request; the sh loop
 * runs it once per request (one fork; it serves where awk cannot answer a line at a time), passing what the awk
 * loop finds when it starts (`-v O=1 -v N=<interfaces> -v M=<uname -m>`). Each request re-reads the files with
 * `getline < file` and `close(file)` (no fork per file), trims them as the perl loop does, and prints the frame as
 * one string followed by `fflush()`: one `printf "%s"` of the whole frame, because an unbuffered mawk writes a
 * format's literal text a byte at a time. df runs `exec df -P /` and a slow request `exec stat -f` (all mounts at
 * once) through `cmd | getline` (`exec`: the shell that awk starts runs the command itself instead of forking
 * again); the clock is POSIX `srand()`'s time of day, in whole seconds. The token is ARGV[1], cleared in BEGIN so
 * that awk reads stdin. POSIX awk only: mawk, gawk, busybox and BSD awk all run it.
 */
const AWK_PROGRAM =
  'function rd(f,  x,l){x="";while((getline l<f)>0)x=x l "\\n";close(f);return x}' +
  'function one(f,  l){l="";getline l<f;close(f);return l}' +
  'function sec(n,x){return x==""?"":"@@kay " n "\\n" x}' +
  'function sq(s,  r,i){r="";while((i=index(s,Q))>0){r=r substr(s,1,i-1) Q "\\\\" Q Q;s=substr(s,i+1)}return Q r s Q}' +
  `BEGIN{t=ARGV[1];ARGV[1]="";Q=sprintf("%c",39);RQ="^[0-9]+( df)?( node)?( slow)?$";DX=${JSON.stringify(DISK_EXCLUDE_ERE)};MX=${JSON.stringify(MOUNT_POINTS_EXCLUDE)};` +
  `FX=${JSON.stringify(FS_TYPES_EXCLUDE)};VX=${JSON.stringify(VMSTAT_FIELDS)};UX=${JSON.stringify(UDEV_LINE)};` +
  'if(O)nv=split(N,V," ");else{c="exec ls /sys/class/net 2>/dev/null";while((c|getline l)>0){v="/sys/devices/virtual/net/" l "/ifindex";' +
  'if((getline y<v)>0){close(v);continue}r="/sys/class/net/" l "/statistics/";' +
  'if((getline y<(r "rx_bytes"))>0&&(getline y<(r "tx_bytes"))>0)V[++nv]=l;close(r "rx_bytes");close(r "tx_bytes")}close(c);' +
  'c="exec uname -m 2>/dev/null";c|getline M;close(c)}}' +
  'function rq(){d=0;n=0;w=0;for(i=2;i<=NF;i++){if($i=="df")d=1;else if($i=="node")n=1;else if($i=="slow")w=1}' +
  'o="@@kay loadavg\\n" rd("/proc/loadavg");' +
  'x="";k=0;f="/proc/meminfo";while((getline l<f)>0){if(!n&&l~/^SUnreclaim:/)k=1;if(!k)x=x l "\\n"}close(f);o=o "@@kay meminfo\\n" x;' +
  'x="";k=0;f="/proc/stat";while((getline l<f)>0){if(l~/^intr /){if(n){split(l,q," ");l="intr " q[2]}else k=1}if(!k)x=x l "\\n"}' +
  'close(f);o=o "@@kay stat\\n" x "@@kay uptime\\n" rd("/proc/uptime");' +
  'if(nv){x="";for(j=1;j<=nv;j++){r="/sys/class/net/" V[j] "/statistics/";q1=one(r "rx_bytes");z=one(r "tx_bytes");' +
  'if(q1~/^[0-9]+$/&&z~/^[0-9]+$/)x=x V[j] ": " q1 " 0 0 0 0 0 0 0 " z "\\n"}o=o "@@kay netdev\\n" x}' +
  'p="";if(n||!nv)p=rd("/proc/net/dev");if(!nv&&!n)o=o "@@kay netdev\\n" p;nd=0;' +
  'if(n){o=o sec("procnetdev",p);x="";m=split(p,L,"\\n");for(j=1;j<=m;j++){if((i=index(L[j],":"))<1)continue;' +
  'v=substr(L[j],1,i-1);gsub(/[ \\t]/,"",v);if(v==""||v=="lo"||v~/[|]/)continue;z=one("/sys/class/net/" v "/statistics/rx_nohandler");' +
  'if(z~/^[0-9]+$/)x=x v " " z "\\n"}o=o sec("nohandler",x);' +
  'x="";f="/proc/vmstat";while((getline l<f)>0){split(l,q," ");if(q[1]~VX)x=x l "\\n"}close(f);o=o sec("vmstat",x);' +
  'o=o sec("filefd",rd("/proc/sys/fs/file-nr")) sec("psi-cpu",rd("/proc/pressure/cpu")) sec("psi-io",rd("/proc/pressure/io"))' +
  ' sec("psi-memory",rd("/proc/pressure/memory"));' +
  'x="";f="/proc/diskstats";while((getline l<f)>0){if(split(l,q," ")<4||q[3]~DX)continue;x=x l "\\n";D[++nd]=q[1] ":" q[2]}' +
  'close(f);o=o sec("diskstats",x);srand();o=o "@@kay time\\n" srand() "\\n"}' +
  'if(d){o=o "@@kay df\\n";c="exec df -P / 2>/dev/null";while((c|getline l)>0)o=o l "\\n";close(c)}' +
  'if(n&&w){x=rd("/proc/1/mounts");if(x=="")x=rd("/proc/self/mounts");m=split(x,L,"\\n");x="";c="";' +
  'for(j=1;j<=m;j++){if(split(L[j],q," ")<4)continue;v=q[2];gsub(/\\\\040/," ",v);gsub(/\\\\011/,"\\t",v);' +
  'if(v~MX||q[3]~FX)continue;x=x L[j] "\\n";c=c " " sq(v)}o=o sec("mounts",x);x="";' +
  'if(c!=""){c="exec stat -f -c " Q "%s %b %f %a %c %d %n" Q " --" c " 2>/dev/null";while((c|getline l)>0)x=x l "\\n";close(c)}' +
  'o=o sec("statfs",x);k="/proc/sys/kernel/";o=o "@@kay uname\\n" one(k "ostype") "\\n" one(k "hostname") "\\n" one(k "osrelease")' +
  ' "\\n" one(k "version") "\\n" M "\\n" one(k "domainname") "\\n";' +
  'x=rd("/etc/os-release");if(x=="")x=rd("/usr/lib/os-release");o=o sec("osrelease",x);x="";' +
  'for(j=1;j<=nd;j++){f="/run/udev/data/b" D[j];while((getline l<f)>0)if(l~UX)x=x D[j] " " substr(l,3) "\\n";close(f)}' +
  // /sys/class/net/<device>/duplex fails with EINVAL on many devices, and a read error ends mawk unless it runs
  // -Winteractive (the awk loop does): a one-shot run (R set: the sh loop, exec) gets the lines from sh in KAY_NC.
  'o=o sec("udev",x);x="";if(R!="")x=ENVIRON["KAY_NC"];else{m=split(p,L,"\\n");for(j=1;j<=m;j++){if((i=index(L[j],":"))<1)continue;' +
  'v=substr(L[j],1,i-1);gsub(/[ \\t]/,"",v);if(v==""||v~/[|]/)continue;r="/sys/class/net/" v "/";x=x v "\\t" one(r "operstate")' +
  ' "\\t" one(r "address") "\\t" one(r "broadcast") "\\t" one(r "duplex") "\\t" one(r "ifalias") "\\n"}}o=o sec("netclass",x);x="";' +
  'for(j=0;j<64;j++){r="/sys/devices/system/clocksource/clocksource" j "/";z=one(r "current_clocksource");if(z=="")break;' +
  'x=x j "\\t" z "\\t" one(r "available_clocksource") "\\n"}o=o sec("clocksource",x);' +
  // The time zone needs a fork (POSIX awk has no strftime): a long-lived awk reads it on every 12th slow request.
  'if(Z==""||ZC++%12==11){c="exec date \\"+%Z %z\\" 2>/dev/null";Z="";c|getline Z;close(c)}if(Z!="")o=o "@@kay tz\\n" Z "\\n"}' +
  'o=o "@@kay-end " t " " $1 "\\n";printf "%s",o;fflush()}' +
  // The sh loop passes its request as R: the program answers it in BEGIN and exits without reading stdin.
  'BEGIN{if(R!=""){$0=R;if($0~RQ)rq();exit}}$0~RQ{rq()}'

/**
 * POSIX sh: sets x to the netclass section's lines (`<device>\t<operstate>\t<address>\t<broadcast>\t<duplex>\t<ifalias>`)
 * when w is set (a slow request), for the awk program's one-shot runs (KAY_NC): sh's `read` survives the EINVAL that
 * /sys/class/net/<device>/duplex gives on many devices.
 */
const SH_NETCLASS =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'x=;[ -n "$w" ]&&for f in /sys/class/net/*;do [ -e "$f" ]||continue;x="$x${f##*/}";' +
  'for r in operstate address broadcast duplex ifalias;do y=;read -r y 2>/dev/null <"$f/$r";x="$x\t$y";done;x="$x\n";done;'

/**
 * sh: the last resort, for hosts where no other loop works. One awk per request runs the awk loop's program for
 * that request: one fork, where a `cat` per file forked five times (ADR 0004); it serves where the long-lived awk
 * loop cannot (an awk that does not answer a line at a time).
 * The interfaces and `uname -m` are found once, when the loop starts. Without awk on the PATH (checked once, when
 * the loop starts) it falls back to `cat` per file for the table's sections, and sends no node section.
 */
const SH_LOOP =
  't=$1;a=;command -v awk >/dev/null 2>&1&&a=1;M=$(uname -m 2>/dev/null);' +
  SH_NET_FIND +
  'g=/proc/net/dev;h=net/dev;[ -n "$p" ]&&{ g=;h=;};' +
  'while IFS= read -r l;do ' +
  SH_REQUEST +
  'if [ -n "$a" ];then ' +
  SH_NETCLASS +
  `KAY_NC=$x awk -v O=1 -v N="$p" -v M="$M" -v R="$l" ${shDq(AWK_PROGRAM)} "$t" </dev/null 2>/dev/null;continue;fi;` +
  'for f in loadavg meminfo stat uptime $h;do x=$(cat /proc/$f 2>/dev/null);' +
  'case $f in net/dev) n=netdev;;*) n=$f;;esac;printf "@@kay %s\\n%s\\n" "$n" "$x";done;' +
  'if [ -n "$p" ];then printf "@@kay netdev\\n";for v in $p;do ' +
  SH_NET_LINE +
  'done;fi;' +
  'if [ -n "$d" ];then x=$(df -P / 2>/dev/null);printf "@@kay df\\n%s\\n" "$x";fi;' +
  'printf "@@kay-end %s %s\\n" "$t" "$s";' +
  'done;exit 0'

for (const script of [AWK_PROGRAM, BASH_LOOP, PERL_LOOP, PYTHON_LOOP, SH_LOOP]) {
  // The scripts are wrapped in single quotes for the login shell; one inside would end the quoting.
  if (script.includes("'")) throw new InternalError('stream script contains a single quote')
}

const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/

/**
 * The exec command for a persistent collection stream of the given flavour. `token` identifies the channel's
 * frames (see `randomStreamToken`); it must be 1–64 characters of [A-Za-z0-9_-] (kay uses 16 hex chars), which
 * is what makes it safe to pass unquoted.
 */
export function streamCommand(flavour: StreamFlavour, token: string): string {
  if (typeof token !== 'string' || !TOKEN_RE.test(token)) {
    throw new ConfigError('stream token must be 1-64 characters of [A-Za-z0-9_-]')
  }
  return forAnyLoginShell(streamScript(flavour, token))
}

/** The stream loop's sh script (what {@link streamCommand} sends, before the login-shell wrapping). */
function streamScript(flavour: StreamFlavour, token: string): string {
  const head = `: kay-stream v1 ${flavour} ${token};`
  switch (flavour) {
    case 'awk':
      return `${head}exec awk -Winteractive '${AWK_PROGRAM}' ${token} 2>/dev/null`
    case 'bash':
      return `${head}exec bash -c '${BASH_LOOP}' kay ${token}`
    case 'perl':
      return `${head}exec perl -e '${PERL_LOOP}' ${token}`
    case 'python':
      return `${head}exec python3 -I -S -c '${PYTHON_LOOP}' ${token}`
    case 'sh':
      return `${head}exec sh -c '${SH_LOOP}' kay ${token}`
    default:
      throw new ConfigError(`unknown stream flavour: ${String(flavour)}`)
  }
}

/** A fresh random stream token: 16 hex chars. */
export function randomStreamToken(): string {
  return randomBytes(8).toString('hex')
}

/** Default for how often a stream request asks for the `df` section (df forks on hosts without statfs). */
export const DF_EVERY = 12

/** Whether request `seq` asks for `df`: the first request, then every `every`th. */
export function wantsDf(seq: number, every: number = DF_EVERY): boolean {
  return seq === 1 || seq % every === 0
}

/** Default for how often a node collection asks for the slow sections (mounts and statfs, uname, os-release, udev). */
export const SLOW_EVERY = 12

/**
 * What a request asks for besides the table's sections: nothing (`table`), the node_exporter sources read every
 * tick (`node`), or those and the slow ones (`node-slow`).
 */
export type NodeRequest = 'table' | 'node' | 'node-slow'

/** The request line for `seq` (with `df` when the root filesystem figure is wanted this tick). */
export function streamRequest(seq: number, df = false, node: NodeRequest = 'table'): string {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new ConfigError(`seq must be a non-negative integer, got ${seq}`)
  const words = node === 'table' ? '' : node === 'node' ? ' node' : ' node slow'
  return `${seq}${df ? ' df' : ''}${words}\n`
}

/**
 * One-shot node collection (the exec fallback of `kay serve`): the awk program answering one request `1 node` (or
 * `1 node slow`), so its sections are the stream loops'. sh finds the interfaces with a glob and `exec`s awk: no
 * fork past the session's own (`uname -m`, which only the slow sections use, is forked on slow requests only).
 * Without awk it sends the table's sections only, as the sh loop does then. Its output ends with the loop's
 * `@@kay-end collect 1` line. It does not carry the sh loop: the command is half as long, and the login shell and
 * sh's decoder read and parse every byte of it on every tick.
 */
export function nodeCollectCommand(slow: boolean): string {
  const words = slow ? 'node slow' : 'node'
  return forAnyLoginShell(
    `: kay-collect v1 ${words};${SH_NET_FIND}M=;w=;${slow ? `M=$(uname -m 2>/dev/null);w=1;${SH_NETCLASS}` : ''}` +
      `KAY_NC=$x;export KAY_NC;command -v awk >/dev/null 2>&1&&exec awk -v O=1 -v N="$p" -v M="$M" -v R="1 ${words}" ${shDq(AWK_PROGRAM)} collect </dev/null 2>/dev/null;` +
      // Without awk, the table's sections as the sh loop sends them then.
      `${shProcLoop(PROC_FILES)}${SH_NETDEV_SECTION};printf "@@kay-end collect 1\\n"`,
  )
}

/** What a command string is, read from its `:` head (for the simulator and for logs). */
export type KayCommand =
  | { kind: 'collect'; node?: Exclude<NodeRequest, 'table'> }
  | { kind: 'detail' }
  | { kind: 'stream'; flavour: StreamFlavour; token: string }
  | { kind: 'other' }

/**
 * Recognises kay's commands by the head of their script, e.g. `: kay-stream v1 bash 0123456789abcdef;`, as sent
 * (wrapped by {@link forAnyLoginShell}) or bare.
 */
export function identifyCommand(sent: string): KayCommand {
  const command = scriptOf(sent) ?? sent
  if (command.startsWith(': kay-collect v1;')) return { kind: 'collect' }
  if (command.startsWith(': kay-collect v1 node;')) return { kind: 'collect', node: 'node' }
  if (command.startsWith(': kay-collect v1 node slow;')) return { kind: 'collect', node: 'node-slow' }
  if (command.startsWith(': kay-detail v1;')) return { kind: 'detail' }
  if (command.startsWith(': kay-stream v1 ')) {
    const semi = command.indexOf(';')
    const parts = command.slice(16, semi === -1 ? undefined : semi).split(' ')
    const [flavour, token] = parts
    if (parts.length === 2 && isStreamFlavour(flavour) && token !== undefined && TOKEN_RE.test(token)) {
      return { kind: 'stream', flavour, token }
    }
  }
  return { kind: 'other' }
}

// ------------------------------------------------------------------------------------------------------------------
// Output that is not kay's

const HEAD_CHARS = 120

/** The first non-blank line of `text`, control characters made visible, cut to HEAD_CHARS. */
function headLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? ''
  const clean = line.trim().replace(/[\u0000-\u001f\u007f]/g, '?')
  return clean.length > HEAD_CHARS ? `${clean.slice(0, HEAD_CHARS)}…` : clean
}

/**
 * Why the answer to one of kay's one-shot commands is not kay's output, or undefined when it is: kay's output has
 * an `@@kay ` section header at the start of a line (a login banner or an rc file's chatter before it is fine).
 * Otherwise kay's command did not run as sent — a ForceCommand answered instead, or the login shell could not run
 * it — and the error says which, with the first line the host printed.
 */
export function notKayOutput(
  host: string,
  r: { stdout: string; stderr: string; exitCode: number | null },
): KayError | undefined {
  if (r.stdout.startsWith('@@kay ') || r.stdout.includes('\n@@kay ')) return undefined
  const details = { exitCode: r.exitCode, stdout: headLine(r.stdout), stderr: headLine(r.stderr) }
  const said = details.stderr || details.stdout
  const why =
    r.exitCode !== 0 && r.exitCode !== null
      ? `kay's command failed on the host (exit ${r.exitCode})${said ? `: ${said}` : ''}`
      : r.stdout.trim() === ''
        ? "the host ran something else than kay's command, which printed nothing"
        : `the host ran something else than kay's command, which printed: ${details.stdout}`
  return new UnexpectedOutputError(`${host}: ${why} (a ForceCommand or a restricted shell on the account?)`, {
    host,
    details,
  })
}
