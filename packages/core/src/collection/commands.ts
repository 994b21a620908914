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
export function isStreamFlavour(x: unknown): x is StreamFlavour {
  return typeof x === 'string' && (STREAM_FLAVOURS as readonly string[]).includes(x)
}

/** The sections every collection (and every stream frame) carries, in order. */
export const COLLECT_SECTIONS = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev'] as const

/** The tick's /proc files; its netdev section follows the interface rule below. */
const PROC_FILES = 'loadavg meminfo stat uptime'
const DETAIL_PROC_FILES = 'stat meminfo loadavg uptime net/dev'
const PS = 'ps -eo pid,user,pcpu,pmem,rss,comm --sort=-pcpu'

/**
 * The network interfaces a tick counts (every loop and the exec command use this rule): those of /sys/class/net
 * that have a device, i.e. are not under /sys/devices/virtual/net, and whose byte counters can be read. Their
 * counters go into the netdev section as `<name>: <rx_bytes> 0 0 0 0 0 0 0 <tx_bytes>` lines (the fields the
 * parser reads of /proc/net/dev's format). With no such interface (a container as the target, no /sys) the section
 * is /proc/net/dev itself. Reading two sysfs counters per interface costs the host a few µs; /proc/net/dev is
 * formatted anew for every interface on each read (~250 µs with 200 veths on a container node, bench/RESULTS.md),
 * and counting only devices also stops container traffic from being counted twice (on the NIC and on its veth).
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

/**
 * One-shot collection (exec mode, the fallback when no stream flavour works): sections loadavg meminfo stat
 * uptime netdev df (`df -P /`), then exit 0. It runs in the login shell, which may be zsh: zsh does not split an
 * unquoted `$p`, so the interfaces are walked with the glob itself rather than with SH_NET_FIND's list.
 */
const COLLECT_SCRIPT =
  ': kay-collect v1;' +
  shProcLoop(PROC_FILES) +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  ';x=$(for f in /sys/class/net/*;do v=${f##*/};[ -e "/sys/devices/virtual/net/$v" ]&&continue;' +
  SH_NET_LINE +
  'done 2>/dev/null);[ -n "$x" ]||x=$(cat /proc/net/dev 2>/dev/null);printf \'@@kay netdev\\n%s\\n\' "$x"' +
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

// The stream loops. Each reads request lines `<seq>` or `<seq> df` from stdin, ignores anything else, answers
// with the sections then `@@kay-end <token> <seq>`, and exits 0 at stdin EOF. `$1` / `$ARGV[0]` is the token.

/** Shared request-line validation for the shell loops: sets s (seq) and d (non-empty when df is asked for). */
// biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
const SH_REQUEST = 'case $l in *" df") s=${l% df};d=1;;*) s=$l;d=;;esac;' + 'case $s in ""|*[!0-9]*) continue;;esac;'

/**
 * bash: each file read by the `read` builtin (no fork per file). `read -d` returns 1 at EOF with the content
 * complete, so it is never a loop condition; the frame is built in one string and written by one printf.
 * bash's `read` costs CPU per character, so two files stop early at a delimiter character: /proc/stat at the
 * first `i` (its cpu lines hold only `cpu`, digits and blanks; the `intr` line after them is the longest in the
 * file), /proc/meminfo at the first `Z` (the `Zswap` lines of newer kernels come after MemTotal…SwapFree; a
 * kernel without them is read whole). The others are read whole (`-d ""`). Each read stops before a line start,
 * so the parser sees the same lines as from the whole file. The five reads are written out rather than looped
 * over: the loop's per-file bookkeeping cost as much as the reads (~0.20 → ~0.16 ms of bash per request).
 * stderr is sent to /dev/null once for the whole loop rather than per file: a per-file `2>/dev/null` doubled the
 * system calls of every read (bash saves, redirects and restores the descriptor each time).
 */
const BASH_LOOP =
  't=$1;printf -v nl "\\n";exec 2>/dev/null;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'V=();for f in /sys/class/net/*;do v=${f##*/};' +
  '[[ -e /sys/devices/virtual/net/$v || ! -r $f/statistics/rx_bytes || ! -r $f/statistics/tx_bytes ]]||V+=("$v");done;' +
  'while IFS= read -r l;do ' +
  SH_REQUEST +
  'a=;b=;c=;u=;n=;' +
  'IFS= read -r -d "" a </proc/loadavg;IFS= read -r -d Z b </proc/meminfo;IFS= read -r -d i c </proc/stat;' +
  'IFS= read -r -d "" u </proc/uptime;' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
  'if ((${#V[@]}));then for v in "${V[@]}";do r=;w=;' +
  'read -r r </sys/class/net/$v/statistics/rx_bytes;read -r w </sys/class/net/$v/statistics/tx_bytes;' +
  '[[ -n $r && -n $w && $r != *[!0-9]* && $w != *[!0-9]* ]]&&n+="$v: $r 0 0 0 0 0 0 0 $w$nl";done;' +
  'else IFS= read -r -d "" n </proc/net/dev;fi;' +
  '[[ $a == *"$nl" ]]||a+=$nl;[[ $b == *"$nl" ]]||b+=$nl;[[ $c == *"$nl" ]]||c+=$nl;' +
  '[[ $u == *"$nl" ]]||u+=$nl;[[ $n == *"$nl" ]]||n+=$nl;' +
  'o="@@kay loadavg$nl$a@@kay meminfo$nl$b@@kay stat$nl$c@@kay uptime$nl$u@@kay netdev$nl$n";' +
  'if [[ -n $d ]];then x=$(df -P /);o+="@@kay df$nl$x$nl";fi;' +
  'printf "%s@@kay-end %s %s\\n" "$o" "$t" "$s";' +
  'done;exit 0'

/**
 * perl: the /proc files are opened once, when the loop starts, and each request rewinds them (`sysseek` to 0
 * regenerates a /proc file) and reads them with sysread into one reused buffer; one syswrite per frame. Opening
 * once instead of per request cut the loop's host CPU by about a third (bench/RESULTS.md). Only what the parser
 * reads is sent: /proc/stat up to the end of its cpu lines, /proc/meminfo up to SReclaimable. A file that cannot
 * be opened gives an empty section, as in the other loops.
 *
 * The df section comes from one statfs(2) of `/` through perl's `syscall` where the syscall number and the
 * 64-bit `struct statfs` layout are known (x86_64, aarch64, riscv64: five 64-bit words first; s390x, for one,
 * has 32-bit f_type and f_bsize, so it is not in the list), printed as `df -P` prints
 * it (Use% rounded up, as coreutils does); elsewhere, or if the call fails, it forks `df -P /` like the other
 * loops. Forking df cost the host ~2 ms, a third of all host CPU over the 12 ticks between two df sections.
 */
const PERL_LOOP =
  String.raw`use Config;my %sf=(x86_64=>137,aarch64=>43,riscv64=>43);` +
  String.raw`my($ar)=$Config{archname}=~/^([^-]+)/;my $sn=$Config{ptrsize}==8?$sf{$ar}:undef;` +
  String.raw`sub rootdf{if(defined $sn){my $b="\0"x512;if(syscall($sn,my $r="/",$b)==0){` +
  String.raw`my(undef,$bs,$bl,$bf,$ba)=unpack("q5",$b);my $u=$bl-$bf;my $t=$u+$ba;my $k=$bs/1024;` +
  String.raw`return sprintf("Filesystem 1024-blocks Used Available Capacity Mounted on\nrootfs %d %d %d %d%% /\n",` +
  String.raw`$bl*$k,$u*$k,$ba*$k,$t>0?int(($u*100+$t-1)/$t):0)}}` +
  String.raw`my $y=qx(exec df -P / 2>/dev/null);$y.="\n" unless substr($y,-1) eq "\n";$y}` +
  String.raw`my $t=shift;my @n=qw(loadavg meminfo stat uptime netdev);my @c=(undef,"\nSUnreclaim:","\nintr ",undef,undef);` +
  String.raw`my @h;for my $f(qw(loadavg meminfo stat uptime net/dev)){my $h;open($h,"<","/proc/$f") or undef $h;push @h,$h}` +
  String.raw`my @v;if(opendir(my $D,"/sys/class/net")){for my $n(sort readdir $D){next if $n=~/^\./||-e "/sys/devices/virtual/net/$n";` +
  String.raw`my($r,$w);open($r,"<","/sys/class/net/$n/statistics/rx_bytes")&&open($w,"<","/sys/class/net/$n/statistics/tx_bytes")&&push @v,[$n,$r,$w]}closedir $D}` +
  String.raw`my $x="";while(defined(my $l=<STDIN>)){` +
  String.raw`next unless $l=~/\A(\d+)( df)?\n?\z/;my($s,$d)=($1,$2);my $o="";` +
  String.raw`for my $i(0..4){my $h=$h[$i];$x="";if($i==4&&@v){for my $e(@v){my($q,$z)=("","");sysseek($$e[1],0,0);sysread($$e[1],$q,64);` +
  String.raw`sysseek($$e[2],0,0);sysread($$e[2],$z,64);chomp $q;chomp $z;$x.="$$e[0]: $q 0 0 0 0 0 0 0 $z\n" if $q=~/^\d+$/&&$z=~/^\d+$/}}` +
  String.raw`elsif($h){sysseek($h,0,0);1 while sysread($h,$x,65536,length $x)}` +
  String.raw`if(defined $c[$i]){my $p=index($x,$c[$i]);$x=substr($x,0,$p+1) if $p>=0}` +
  String.raw`$x.="\n" unless substr($x,-1) eq "\n";$o.="\@\@kay $n[$i]\n$x"}` +
  String.raw`$o.="\@\@kay df\n".rootdf() if defined $d;` +
  String.raw`syswrite(STDOUT,$o."\@\@kay-end $t $s\n")}exit 0`

/**
 * python: for hosts without perl that have python3 (RHEL minimal installs, many container images). Run with `-I -S`
 * (isolated: no PYTHON* variables, no user or site packages, so nothing on the host's path can change the loop).
 * Like the perl loop: the /proc files are opened once and read with `os.pread` at offset 0 on each request (which
 * regenerates a /proc file), only what the parser reads is sent, the frame goes out in one write (looped until
 * complete), and the df section comes from `os.statvfs("/")`, printed as `df -P` prints it; if that call fails it
 * runs `df -P /`. Python 3.5 or newer (bytes `%` formatting); an older one fails the probe's first request
 * (it asks for df), and the next flavour is tried.
 */
const PYTHON_LOOP = [
  'import os,sys',
  't=sys.argv[1].encode()',
  'def op(p):',
  ' try:return os.open(p,os.O_RDONLY)',
  ' except OSError:return -1',
  'F=[(b"loadavg",op("/proc/loadavg"),b""),(b"meminfo",op("/proc/meminfo"),b"\\nSUnreclaim:"),' +
    '(b"stat",op("/proc/stat"),b"\\nintr "),(b"uptime",op("/proc/uptime"),b""),(b"netdev",op("/proc/net/dev"),b"")]',
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
  'def nd():',
  ' o=[]',
  ' for n,r,w in V:',
  '  q=rd(r).strip();z=rd(w).strip()',
  '  if q.isdigit() and z.isdigit():o.append(b"%s: %s 0 0 0 0 0 0 0 %s\\n"%(n,q,z))',
  ' return b"".join(o)',
  'def df():',
  ' try:v=os.statvfs("/")',
  ' except OSError:',
  '  y=os.popen("exec df -P / 2>/dev/null").read().encode()',
  '  return y if y[-1:]==b"\\n" else y+b"\\n"',
  ' f=v.f_frsize;u=v.f_blocks-v.f_bfree;s=u+v.f_bavail',
  ' return b"Filesystem 1024-blocks Used Available Capacity Mounted on\\nrootfs %d %d %d %d%% /\\n"%(' +
    'v.f_blocks*f//1024,u*f//1024,v.f_bavail*f//1024,(u*100+s-1)//s if s>0 else 0)',
  'for l in sys.stdin.buffer:',
  ' if l[-1:]==b"\\n":l=l[:-1]',
  ' d=l[-3:]==b" df"',
  ' s=l[:-3] if d else l',
  ' if not s.isdigit():continue',
  ' o=[]',
  ' for n,fd,c in F:',
  '  if n==b"netdev" and V:x=nd()',
  '  else:',
  '   x=rd(fd)',
  '   if c:',
  '    p=x.find(c)',
  '    if p>=0:x=x[:p+1]',
  '  if x[-1:]!=b"\\n":x+=b"\\n"',
  '  o.append(b"@@kay "+n+b"\\n"+x)',
  ' if d:o.append(b"@@kay df\\n"+df())',
  ' o.append(b"@@kay-end "+t+b" "+s+b"\\n")',
  ' m=memoryview(b"".join(o))',
  ' while m:m=m[os.write(1,m):]',
].join('\n')

/**
 * awk: one long-lived awk, for hosts without perl and python3 (awk is POSIX: mawk, gawk, busybox and BSD awk all
 * run it). Each request re-reads the five files with `getline < file` and `close(file)` (no fork per request), trims
 * them as the perl loop does, and prints the frame as one string followed by `fflush()`: one `printf "%s"` of the
 * whole frame, because an unbuffered mawk writes a format's literal text a byte at a time. `-Winteractive` is
 * mawk's switch for reading stdin a line at a time (without it mawk waits for a full buffer of requests); gawk,
 * busybox and BSD awk ignore it with a warning on stderr, which goes to /dev/null. df runs `exec df -P /` through
 * `cmd | getline` (`exec`: the shell that awk starts runs df itself instead of forking again). The token is
 * ARGV[1], cleared in BEGIN so that awk reads stdin.
 */
const AWK_LOOP =
  'BEGIN{t=ARGV[1];ARGV[1]="";split("loadavg meminfo stat uptime net/dev",F," ");' +
  'c="exec ls /sys/class/net 2>/dev/null";while((c|getline l)>0){v="/sys/devices/virtual/net/" l "/ifindex";' +
  'if((getline y<v)>0){close(v);continue}r="/sys/class/net/" l "/statistics/";' +
  'if((getline y<(r "rx_bytes"))>0&&(getline y<(r "tx_bytes"))>0)V[++nv]=l;close(r "rx_bytes");close(r "tx_bytes")}close(c)}' +
  '/^[0-9]+( df)?$/{o="";for(i=1;i<=5;i++){f="/proc/" F[i];n=F[i];if(n=="net/dev")n="netdev";o=o "@@kay " n "\\n";k=0;' +
  'if(n=="netdev"&&nv){for(j=1;j<=nv;j++){r="/sys/class/net/" V[j] "/statistics/";q="";z="";' +
  'getline q<(r "rx_bytes");close(r "rx_bytes");getline z<(r "tx_bytes");close(r "tx_bytes");' +
  'if(q~/^[0-9]+$/&&z~/^[0-9]+$/)o=o V[j] ": " q " 0 0 0 0 0 0 0 " z "\\n"}continue}' +
  'while((getline l<f)>0){if(k)continue;if(n=="stat"&&l~/^intr /){k=1;continue}' +
  'if(n=="meminfo"&&l~/^SUnreclaim:/){k=1;continue}o=o l "\\n"}close(f)}' +
  'if($2=="df"){o=o "@@kay df\\n";c="exec df -P / 2>/dev/null";while((c|getline l)>0)o=o l "\\n";close(c)}' +
  'o=o "@@kay-end " t " " $1 "\\n";printf "%s",o;fflush()}'

/**
 * The sh loop's awk program: prints each file under its `@@kay <name>` header, /proc/stat only up to its cpu lines
 * and /proc/meminfo only up to SReclaimable (what the parser reads, as the perl loop sends). It sits inside the
 * loop's double quotes, so it has no `$`, and its string quotes are escaped.
 */
const SH_AWK =
  'FNR==1{n=FILENAME;sub(/^\\/proc\\//,\\"\\",n);if(n==\\"net/dev\\")n=\\"netdev\\";print \\"@@kay \\" n;k=0}' +
  'k{next}' +
  'n==\\"stat\\"&&/^intr /{k=1;next}' +
  'n==\\"meminfo\\"&&/^SUnreclaim:/{k=1;next}' +
  '{print}'

/**
 * sh: the last resort, for hosts where no other loop works. One `awk` per request prints all five files: one fork,
 * where a `cat` per file forked five times (~4.7 → ~1 ms of host CPU per request, bench/RESULTS.md); it serves
 * where the long-lived awk loop cannot (an awk that does not answer a line at a time). Without awk on the PATH
 * (checked once, when the loop starts) it falls back to `cat` per file.
 * Under awk a file that cannot be read is left out (mawk stops at it); under cat it gives an empty section.
 */
const SH_LOOP =
  't=$1;a=;command -v awk >/dev/null 2>&1&&a=1;' +
  SH_NET_FIND +
  'g=/proc/net/dev;h=net/dev;[ -n "$p" ]&&{ g=;h=;};' +
  'while IFS= read -r l;do ' +
  SH_REQUEST +
  `if [ -n "$a" ];then awk "${SH_AWK}" /proc/loadavg /proc/meminfo /proc/stat /proc/uptime $g 2>/dev/null;` +
  'else for f in loadavg meminfo stat uptime $h;do x=$(cat /proc/$f 2>/dev/null);' +
  'case $f in net/dev) n=netdev;;*) n=$f;;esac;printf "@@kay %s\\n%s\\n" "$n" "$x";done;fi;' +
  'if [ -n "$p" ];then printf "@@kay netdev\\n";for v in $p;do ' +
  SH_NET_LINE +
  'done;fi;' +
  'if [ -n "$d" ];then x=$(df -P / 2>/dev/null);printf "@@kay df\\n%s\\n" "$x";fi;' +
  'printf "@@kay-end %s %s\\n" "$t" "$s";' +
  'done;exit 0'

// Inside the sh loop's double quotes, `$` and a backquote would be expanded by the shell, not seen by awk.
if (/[$`]/.test(SH_AWK)) throw new InternalError('the sh loop awk program contains $ or a backquote')
for (const script of [AWK_LOOP, BASH_LOOP, PERL_LOOP, PYTHON_LOOP, SH_LOOP]) {
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
      return `${head}exec awk -Winteractive '${AWK_LOOP}' ${token} 2>/dev/null`
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

/** The request line for `seq` (with `df` when the root filesystem figure is wanted this tick). */
export function streamRequest(seq: number, df = false): string {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new ConfigError(`seq must be a non-negative integer, got ${seq}`)
  return df ? `${seq} df\n` : `${seq}\n`
}

/** What a command string is, read from its `:` head (for the simulator and for logs). */
export type KayCommand =
  | { kind: 'collect' }
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
