/** A task with a known amount of work, shown as a progress bar (or plain lines off a terminal). */
export interface ProgressTask {
  /** Sets how much is done; `status` is a short text shown beside the bar (e.g. "loss 0.31 acc 0.92"). */
  update(done: number, status?: string): void;
  /** Ends the task; `summary` replaces the bar's last state in plain-line mode. */
  finish(summary?: string): void;
}

/** Where finetune reports what it is doing. The CLI draws progress bars; the library is silent by default. */
export interface Reporter {
  info(message: string): void;
  warn(message: string): void;
  task(label: string, total: number, unit?: string): ProgressTask;
}

const idle: ProgressTask = { update() {}, finish() {} };

/** Reports nothing. */
export const silentReporter: Reporter = {
  info() {},
  warn() {},
  task: () => idle,
};
