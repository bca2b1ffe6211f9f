/**
 * `finetune cache [--clear] [--json]`: where the cache kept between runs is, what it holds
 * (entries and bytes per kind) and its size cap; `--clear` empties it.
 */
import { Command } from 'commander';
import { DiskCache, type DiskCacheStats } from '../cache/disk-cache.js';

export interface CacheIo {
  stdout?: NodeJS.WritableStream;
}

const KIND_NAMES: Record<string, string> = { pixels: 'decoded images', frozen: 'frozen-layer outputs', report: 'report pictures', stage: 'stage-1 results (trained heads)' };

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

export function formatCacheStats(stats: DiskCacheStats): string {
  const lines = [
    `cache: ${stats.dir}`,
    `  ${stats.entries} entries, ${mib(stats.bytes)} of the ${mib(stats.maxBytes)} cap (--disk-cache-mb or FINETUNE_DISK_CACHE_MB; least recently used go first)`,
  ];
  for (const [kind, k] of Object.entries(stats.kinds)) lines.push(`  ${KIND_NAMES[kind] ?? kind}: ${k.entries} entries, ${mib(k.bytes)}`);
  return lines.join('\n') + '\n';
}

export function cacheCommand(io: CacheIo = {}): Command {
  const out = io.stdout ?? process.stdout;
  return new Command('cache')
    .summary('show (or --clear) the cache of decoded images and frozen-layer outputs kept between runs')
    .description(
      'Show where the cache kept between training runs is ($FINETUNE_HOME/cache, default ~/.cache/finetune/cache), how many entries ' +
        'and bytes it holds per kind, and its size cap; --clear empties it.',
    )
    .option('--clear', 'delete every entry')
    .option('--json', 'print JSON for scripts')
    .exitOverride()
    .action(async (flags: { clear?: boolean; json?: boolean }) => {
      const cache = new DiskCache();
      if (flags.clear) {
        const removed = await cache.clear();
        out.write(
          flags.json
            ? JSON.stringify({ dir: cache.dir, cleared: removed }, null, 2) + '\n'
            : `cache: removed ${removed.entries} entries (${mib(removed.bytes)}) from ${cache.dir}\n`,
        );
        return;
      }
      const stats = await cache.stats();
      out.write(flags.json ? JSON.stringify(stats, null, 2) + '\n' : formatCacheStats(stats));
    });
}
