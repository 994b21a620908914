/**
 * The node_exporter metric families kay exports (`kay serve`), as Debian's prometheus-node-exporter 1.5 names,
 * types and documents them, and the default exclusions it applies. The exclusion patterns are also spliced into
 * the stream loops (commands.ts), which leave excluded mounts unstatted and excluded devices unsent; the parser
 * (node.ts) applies them again, so a loop that sends more changes nothing.
 */

/** node_exporter's collectors whose families kay exports (node_exporter's names for them). */
export const NODE_EXPORTER_COLLECTORS = [
  'cpu',
  'meminfo',
  'loadavg',
  'netdev',
  'filesystem',
  'diskstats',
  'stat',
  'vmstat',
  'filefd',
  'pressure',
  'uname',
  'os',
  'time',
] as const

/**
 * The sections a node request adds (docs/collection-protocol.md), besides the table's (with meminfo and stat
 * whole): read on every node request, and on slow ones only.
 */
export const NODE_TICK_SECTIONS = [
  'procnetdev',
  'nohandler',
  'vmstat',
  'filefd',
  'psi-cpu',
  'psi-io',
  'psi-memory',
  'diskstats',
  'time',
] as const
export const NODE_SLOW_SECTIONS = [
  'mounts',
  'statfs',
  'uname',
  'osrelease',
  'udev',
  'netclass',
  'clocksource',
  'tz',
] as const
export type NodeSectionName = (typeof NODE_TICK_SECTIONS)[number] | (typeof NODE_SLOW_SECTIONS)[number]

/** The exposition type of a family (node_exporter's vmstat fields are untyped). */
export type NodeFamilyType = 'counter' | 'gauge' | 'untyped'

export interface NodeFamilyMeta {
  type: NodeFamilyType
  help: string
}

/**
 * Mount points left out (`--collector.filesystem.mount-points-exclude`). This is the default of Debian's build,
 * which differs from upstream 1.5's `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
 */
export const MOUNT_POINTS_EXCLUDE =
  '^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)'

/** Filesystem types left out (`--collector.filesystem.fs-types-exclude`, the same in Debian and upstream 1.5). */
export const FS_TYPES_EXCLUDE =
  '^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$'

/** Block devices left out (`--collector.diskstats.device-exclude`): partitions, ram and loop devices. */
export const DISK_DEVICES_EXCLUDE = '^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$'

/** Network devices left out (`--collector.netdev.device-exclude`). */
export const NET_DEVICES_EXCLUDE = '^lo$'

/** The /proc/vmstat fields exported (`--collector.vmstat.fields`). */
export const VMSTAT_FIELDS = '^(oom_kill|pgpg|pswp|pg.*fault).*'

/** The udev properties (`E:` lines of /run/udev/data/b<major>:<minor>) the diskstats families read. */
export const UDEV_KEYS = [
  'ID_PATH',
  'ID_WWN',
  'ID_MODEL',
  'ID_SERIAL_SHORT',
  'ID_REVISION',
  'ID_FS_TYPE',
  'ID_FS_USAGE',
  'ID_FS_UUID',
  'ID_FS_VERSION',
  'DM_NAME',
  'DM_UUID',
  'DM_VG_NAME',
  'DM_LV_NAME',
  'DM_LV_LAYER',
  'ID_ATA',
  'ID_ATA_WRITE_CACHE',
  'ID_ATA_WRITE_CACHE_ENABLED',
  'ID_ATA_ROTATION_RATE_RPM',
] as const

const c = (help: string): NodeFamilyMeta => ({ type: 'counter', help })
const g = (help: string): NodeFamilyMeta => ({ type: 'gauge', help })
const net = (key: string): [string, NodeFamilyMeta] => [
  `node_network_${key}_total`,
  c(`Network device statistic ${key}.`),
]

/** The /proc/net/dev columns in file order, as node_exporter names them (then `receive_nohandler` from sysfs). */
export const NETDEV_KEYS = [
  'receive_bytes',
  'receive_packets',
  'receive_errs',
  'receive_drop',
  'receive_fifo',
  'receive_frame',
  'receive_compressed',
  'receive_multicast',
  'transmit_bytes',
  'transmit_packets',
  'transmit_errs',
  'transmit_drop',
  'transmit_fifo',
  'transmit_colls',
  'transmit_carrier',
  'transmit_compressed',
] as const

/**
 * The /proc/diskstats columns after major, minor and name, as node_exporter names them; a kernel with fewer
 * columns (4.18 has 11, 5.5+ 17) has fewer families. `scale`: sectors → bytes (512), ms → seconds.
 */
export const DISK_COLUMNS: ReadonlyArray<{ name: string; scale: number; type: NodeFamilyType; help: string }> = [
  {
    name: 'node_disk_reads_completed_total',
    scale: 1,
    type: 'counter',
    help: 'The total number of reads completed successfully.',
  },
  { name: 'node_disk_reads_merged_total', scale: 1, type: 'counter', help: 'The total number of reads merged.' },
  {
    name: 'node_disk_read_bytes_total',
    scale: 512,
    type: 'counter',
    help: 'The total number of bytes read successfully.',
  },
  {
    name: 'node_disk_read_time_seconds_total',
    scale: 0.001,
    type: 'counter',
    help: 'The total number of seconds spent by all reads.',
  },
  {
    name: 'node_disk_writes_completed_total',
    scale: 1,
    type: 'counter',
    help: 'The total number of writes completed successfully.',
  },
  { name: 'node_disk_writes_merged_total', scale: 1, type: 'counter', help: 'The number of writes merged.' },
  {
    name: 'node_disk_written_bytes_total',
    scale: 512,
    type: 'counter',
    help: 'The total number of bytes written successfully.',
  },
  {
    name: 'node_disk_write_time_seconds_total',
    scale: 0.001,
    type: 'counter',
    help: 'This is the total number of seconds spent by all writes.',
  },
  { name: 'node_disk_io_now', scale: 1, type: 'gauge', help: 'The number of I/Os currently in progress.' },
  { name: 'node_disk_io_time_seconds_total', scale: 0.001, type: 'counter', help: 'Total seconds spent doing I/Os.' },
  {
    name: 'node_disk_io_time_weighted_seconds_total',
    scale: 0.001,
    type: 'counter',
    help: 'The weighted # of seconds spent doing I/Os.',
  },
  {
    name: 'node_disk_discards_completed_total',
    scale: 1,
    type: 'counter',
    help: 'The total number of discards completed successfully.',
  },
  { name: 'node_disk_discards_merged_total', scale: 1, type: 'counter', help: 'The total number of discards merged.' },
  {
    name: 'node_disk_discarded_sectors_total',
    scale: 1,
    type: 'counter',
    help: 'The total number of sectors discarded successfully.',
  },
  {
    name: 'node_disk_discard_time_seconds_total',
    scale: 0.001,
    type: 'counter',
    help: 'This is the total number of seconds spent by all discards.',
  },
  {
    name: 'node_disk_flush_requests_total',
    scale: 1,
    type: 'counter',
    help: 'The total number of flush requests completed successfully',
  },
  {
    name: 'node_disk_flush_requests_time_seconds_total',
    scale: 0.001,
    type: 'counter',
    help: 'This is the total number of seconds spent by all flush requests.',
  },
]

/** The filesystem families, in the order node.ts renders them. */
export const FILESYSTEM_FAMILIES = [
  'node_filesystem_device_error',
  'node_filesystem_size_bytes',
  'node_filesystem_free_bytes',
  'node_filesystem_avail_bytes',
  'node_filesystem_files',
  'node_filesystem_files_free',
  'node_filesystem_readonly',
] as const

const STATIC: ReadonlyArray<[string, NodeFamilyMeta]> = [
  ['node_cpu_seconds_total', c('Seconds the CPUs spent in each mode.')],
  ['node_cpu_guest_seconds_total', c('Seconds the CPUs spent in guests (VMs) for each mode.')],
  ['node_boot_time_seconds', g('Node boot time, in unixtime.')],
  ['node_context_switches_total', c('Total number of context switches.')],
  ['node_forks_total', c('Total number of forks.')],
  ['node_intr_total', c('Total number of interrupts serviced.')],
  ['node_procs_running', g('Number of processes in runnable state.')],
  ['node_procs_blocked', g('Number of processes blocked waiting for I/O to complete.')],
  ['node_time_seconds', g('System time in seconds since epoch (1970).')],
  ['node_time_zone_offset_seconds', g('System time zone offset in seconds.')],
  ['node_time_clocksource_available_info', g("Available clocksources read from '/sys/devices/system/clocksource'.")],
  ['node_time_clocksource_current_info', g("Current clocksource read from '/sys/devices/system/clocksource'.")],
  ['node_load1', g('1m load average.')],
  ['node_load5', g('5m load average.')],
  ['node_load15', g('15m load average.')],
  ...NETDEV_KEYS.map(net),
  net('receive_nohandler'),
  ['node_network_up', g("Value is 1 if operstate is 'up', 0 otherwise.")],
  ['node_network_info', g('Non-numeric data from /sys/class/net/<iface>, value is always 1.')],
  ['node_filesystem_size_bytes', g('Filesystem size in bytes.')],
  ['node_filesystem_free_bytes', g('Filesystem free space in bytes.')],
  ['node_filesystem_avail_bytes', g('Filesystem space available to non-root users in bytes.')],
  ['node_filesystem_files', g('Filesystem total file nodes.')],
  ['node_filesystem_files_free', g('Filesystem total free file nodes.')],
  ['node_filesystem_readonly', g('Filesystem read-only status.')],
  ['node_filesystem_device_error', g('Whether an error occurred while getting statistics for the given device.')],
  ...DISK_COLUMNS.map((d): [string, NodeFamilyMeta] => [d.name, { type: d.type, help: d.help }]),
  ['node_disk_info', g('Info of /sys/block/<block_device>.')],
  ['node_disk_filesystem_info', g('Info about disk filesystem.')],
  ['node_disk_device_mapper_info', g('Info about disk device mapper.')],
  ['node_disk_ata_write_cache', g('ATA disk has a write cache.')],
  ['node_disk_ata_write_cache_enabled', g('ATA disk has its write cache enabled.')],
  ['node_disk_ata_rotation_rate_rpm', g('ATA disk rotation rate in RPMs (0 for SSDs).')],
  ['node_filefd_allocated', g('File descriptor statistics: allocated.')],
  ['node_filefd_maximum', g('File descriptor statistics: maximum.')],
  ['node_pressure_cpu_waiting_seconds_total', c('Total time in seconds that processes have waited for CPU time')],
  [
    'node_pressure_io_waiting_seconds_total',
    c('Total time in seconds that processes have waited due to IO congestion'),
  ],
  [
    'node_pressure_io_stalled_seconds_total',
    c('Total time in seconds no process could make progress due to IO congestion'),
  ],
  ['node_pressure_memory_waiting_seconds_total', c('Total time in seconds that processes have waited for memory')],
  [
    'node_pressure_memory_stalled_seconds_total',
    c('Total time in seconds no process could make progress due to memory congestion'),
  ],
  ['node_uname_info', g('Labeled system information as provided by the uname system call.')],
  [
    'node_os_info',
    g(
      "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, " +
        'pretty_name, variant, variant_id, version, version_codename, version_id.',
    ),
  ],
  ['node_os_version', g('Metric containing the major.minor part of the OS version.')],
]

const STATIC_META = new Map(STATIC)

/** The fixed families (every name node.ts writes that is not a meminfo or vmstat field). */
export const STATIC_NODE_FAMILIES: readonly string[] = STATIC.map(([name]) => name)

/** Longest family name accepted (meminfo and vmstat fields make names from what a host sends). */
export const MAX_FAMILY_NAME = 128
const DYNAMIC_NAME = /^node_(memory|vmstat)_[A-Za-z0-9_]+$/

/**
 * Type and help of a family kay can export, as node_exporter gives them; undefined for any other name (which is
 * how a name received from a shard thread is checked). meminfo fields are gauges (counters when they end in
 * `_total`, as node_exporter decides), vmstat fields untyped.
 */
export function nodeFamilyMeta(name: string): NodeFamilyMeta | undefined {
  const s = STATIC_META.get(name)
  if (s !== undefined) return s
  if (name.length > MAX_FAMILY_NAME || !DYNAMIC_NAME.test(name)) return undefined
  if (name.startsWith('node_memory_')) {
    const field = name.slice(12)
    return { type: field.endsWith('_total') ? 'counter' : 'gauge', help: `Memory information field ${field}.` }
  }
  const field = name.slice(12)
  return { type: 'untyped', help: `/proc/vmstat information field ${field}.` }
}
