/**
 * The one policy for checks that need a WebGPU adapter: where there is none (no GPU and no
 * lavapipe, or the optional `webgpu` package missing) the test is skipped with the reason, visible in
 * the report; under CI it fails instead, because CI installs lavapipe (.ci/webgpu-on-cpu) and must
 * run the WebGPU checks, so they can never stop running there unnoticed.
 */
import { tmpdir } from 'node:os';
import type { TestContext } from 'vitest';
import { initEngine } from '../../src/engine/backend.js';
import { inCI } from './shared.js';

/** The script that gives a GPU-less Debian 12 machine a WebGPU adapter (Mesa's lavapipe). */
export const WEBGPU_ON_CPU = '.ci/webgpu-on-cpu';

/**
 * Makes webgpu the active backend (an explicit request, so a CPU adapter such as lavapipe is
 * accepted); returns why it cannot, or undefined when it is active.
 */
export async function startWebgpu(): Promise<string | undefined> {
  process.env.XDG_RUNTIME_DIR ??= tmpdir(); // Dawn's Vulkan loader warns without one; containers often have none
  try {
    await initEngine('webgpu');
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** What to tell someone whose machine has no WebGPU adapter for the tests. */
export function webgpuMissingMessage(reason: string): string {
  return (
    `${reason.replace(/\.?$/, '.')} On a GPU-less Debian 12 machine, \`${WEBGPU_ON_CPU}\` (as root) installs Mesa's lavapipe, ` +
    'after which `node bin/finetune.js doctor --no-speed` lists a webgpu adapter.'
  );
}

/**
 * Skips the test saying why WebGPU is missing (`unavailable`: startWebgpu's answer), or under CI
 * fails it: there the WebGPU tests must run, not skip.
 */
export function needWebgpu(ctx: TestContext, unavailable: string | undefined): void {
  if (unavailable === undefined) return;
  const message = webgpuMissingMessage(unavailable);
  if (inCI()) {
    throw new Error(`CI=true requires the WebGPU tests to run, not skip: ${message} (.ci/run calls ${WEBGPU_ON_CPU} first: see what it printed.)`);
  }
  ctx.skip(message);
}
