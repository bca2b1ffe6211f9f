import cliProgress from 'cli-progress';
import type { ProgressTask, Reporter } from '../reporter.js';

/**
 * The CLI's reporter. On a terminal: one live progress bar per task (with ETA), on stderr so that
 * stdout stays clean for results. Off a terminal (CI logs, pipes): plain lines, one per finished
 * task and one every few seconds during a long one — no carriage-return noise in log files.
 */
const PLAIN_PROGRESS_INTERVAL_MS = 5000;

export function consoleReporter(options: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): Reporter {
  const stream = options.stream ?? process.stderr;
  const quiet = options.quiet ?? false;
  const interactive = Boolean(stream.isTTY) && !quiet;
  const line = (text: string) => stream.write(text + '\n');

  return {
    info(message) {
      if (!quiet) line(message);
    },
    warn(message) {
      line(`warning: ${message}`);
    },
    task(label, total, unit = ''): ProgressTask {
      if (quiet) return { update() {}, finish() {} };
      if (!interactive || total <= 0) {
        // Off a terminal: a line every few seconds for long tasks, and one when done.
        let last = Date.now();
        return {
          update(done, status) {
            if (done < total && Date.now() - last >= PLAIN_PROGRESS_INTERVAL_MS) {
              last = Date.now();
              line(`${label}: ${done}/${total} ${unit}${status ? ` ${status}` : ''}`);
            }
          },
          finish(summary) {
            line(summary ?? `${label}: done`);
          },
        };
      }
      const bar = new cliProgress.SingleBar(
        {
          stream,
          format: `${label} [{bar}] {value}/{total} ${unit} | eta {eta_formatted} {status}`,
          barsize: 24,
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { status: '' });
      return {
        update(done, status) {
          bar.update(done, { status: status ?? '' });
        },
        finish(summary) {
          bar.stop();
          if (summary) line(summary);
        },
      };
    },
  };
}
