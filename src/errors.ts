/**
 * An error meant for the person running finetune: its message says what went wrong and what to do.
 * The CLI prints it on one line (no stack trace unless --verbose) and exits with `exitCode`.
 */
export class FinetuneError extends Error {
  /** 1: the run failed; 2: a usage error (bad flag or value). */
  readonly exitCode: number;

  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FinetuneError';
    this.exitCode = options.exitCode ?? 1;
  }
}

/** A bad flag or option value (exit status 2). */
export class UsageError extends FinetuneError {
  constructor(message: string) {
    super(message, { exitCode: 2 });
    this.name = 'UsageError';
  }
}

/** The run was stopped by SIGINT/SIGTERM (exit status 130, as shells report Ctrl-C). */
export class InterruptedError extends FinetuneError {
  constructor(message: string) {
    super(message, { exitCode: 130 });
    this.name = 'InterruptedError';
  }
}
