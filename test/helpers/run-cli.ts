import { spawn } from 'node:child_process';

export interface CliRun {
  /** Exit status, or null when a signal (e.g. the timeout's) ended it. */
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end and collects its output, like spawnSync but without blocking the test
 * worker: a spawnSync of a minute or more keeps vitest from hearing from the worker and it reports
 * "Timeout calling onTaskUpdate".
 */
export function runCli(
  command: string,
  args: string[],
  options: { cwd?: string; timeout?: number; input?: string; env?: Record<string, string> } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const env = options.env ? { ...process.env, ...options.env } : undefined; // extra variables over the test's own
    const child = spawn(command, args, { cwd: options.cwd, timeout: options.timeout, env, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    child.stdin?.end(options.input);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
