/** Text formats shared by the report page and the runs table. */

/** Seconds as a short duration: 8.4s, 2m44s, 1h02m. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 59.95) return `${seconds.toFixed(1)}s`;
  const total = Math.round(seconds);
  if (total < 3600) return `${Math.floor(total / 60)}m${String(total % 60).padStart(2, '0')}s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}

/** Shortens `content` to at most `max` characters, ending in '…' when cut. */
export function abbreviate(content: string, max: number): string {
  if (content.length <= max) return content;
  return max <= 1 ? '…' : content.slice(0, max - 1) + '…';
}

/**
 * Shortens `content` to at most `max` characters by cutting out its middle: class names often share
 * a prefix and differ at the end ("n01440764_tench"), so both ends are kept.
 */
export function abbreviateMiddle(content: string, max: number): string {
  if (content.length <= max) return content;
  if (max < 5) return abbreviate(content, max);
  const tail = Math.floor((max - 1) * 0.4);
  return content.slice(0, max - 1 - tail) + '…' + content.slice(content.length - tail);
}
