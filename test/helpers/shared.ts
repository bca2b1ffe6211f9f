import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeEach, type TestContext } from 'vitest';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * ../shared beside the repository (real weights and datasets), when this machine has it.
 * FINETUNE_SHARED_DIR points elsewhere (e.g. /nonexistent, to see what runs without it).
 */
export const sharedDir = process.env.FINETUNE_SHARED_DIR ? path.resolve(process.env.FINETUNE_SHARED_DIR) : path.resolve(repoRoot, '../shared');

/** A path inside the shared folder, e.g. sharedPath('datasets/hymenoptera_data'). */
export const sharedPath = (relative: string) => path.join(sharedDir, relative);

export const TM_WEIGHTS = 'weights/teachable-machine-mobilenet_v2_0.35_224';
export const tmWeightsDir = sharedPath(TM_WEIGHTS);

/** The shared Teachable Machine MobileNetV2 0.35 export, or undefined (with a note) when absent. */
export function sharedMobileNetWeights(): string | undefined {
  if (existsSync(path.join(tmWeightsDir, 'model.json'))) return tmWeightsDir;
  console.warn(`note: ${tmWeightsDir} is absent; using random backbone weights instead`);
  return undefined;
}

/** True under CI (CI=true, as CI services and .ci/run set it): there a check must not skip for want of ../shared. */
export function inCI(): boolean {
  const ci = process.env.CI?.toLowerCase();
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false';
}

/** Why `what` cannot be checked (the shared paths it needs that are absent), or undefined when it can. */
export function missingShared(what: string, relativePaths: string[]): string | undefined {
  const missing = relativePaths.map(sharedPath).filter((p) => !existsSync(p));
  if (missing.length === 0) return undefined;
  return `${what} needs ${missing.join(' and ')}, which ${missing.length > 1 ? 'are' : 'is'} absent`;
}

/**
 * The one policy for checks that need ../shared: when a path is absent the test is skipped with the
 * reason (visible in the report), and under CI it fails instead, since CI must run every check.
 */
export function needShared(ctx: TestContext, what: string, ...relativePaths: string[]): void {
  const reason = missingShared(what, relativePaths);
  if (reason === undefined) return;
  if (inCI()) {
    throw new Error(`${reason}: CI needs ../shared (real weights and datasets) beside the repository, or FINETUNE_SHARED_DIR pointing at it`);
  }
  ctx.skip(reason);
}

/** needShared for every test of the enclosing describe block (call it inside the block). */
export function needSharedForSuite(what: string, ...relativePaths: string[]): void {
  beforeEach((ctx) => needShared(ctx, what, ...relativePaths));
}
