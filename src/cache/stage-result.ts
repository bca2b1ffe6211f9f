/**
 * Stage 1's result in the persistent cache: the checkpoint a run writes when its first stage ends
 * (the model with its new head, the history, early stopping's best epoch and weights, the
 * learning-rate schedule's state), stored under a key naming everything that decides it. A later
 * run whose stage 1 would compute the same thing — a sweep over a stage-2 flag (`--fine-tune-lr`,
 * `--fine-tune-epochs`, `--layer-lr-decay`), or the same command again — resumes after stage 1
 * from it, as `--resume` does from a run's own checkpoint, with the same result bit for bit.
 *
 * The key is conservative: every option but the stage-2 ones, the decoded pixels and labels of
 * every training and validation image, every weight of the model before training (backbone and
 * the freshly initialised head), the preprocessing, the backend as it runs (threads included),
 * tfjs's version and a digest of finetune's own code. Anything else that differs is a miss.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../io/atomic.js';
import { CHECKPOINT_STATE_FILE, checkpointFiles } from '../train/checkpoint.js';
import { DiskCache } from './disk-cache.js';

export const STAGE_KIND = 'stage';
const FORMAT = 'finetune-stage-result/1';

/** Options that only stage 2 reads: a run that differs in them alone shares stage 1's result. */
export const STAGE2_ONLY_OPTIONS = ['fineTuneLr', 'fineTuneEpochs', 'layerLrDecay'] as const;

export interface StageKeyParts {
  /** The run's options that decide what it computes (`runIdentity`); stage-2-only ones are dropped here. */
  options: Record<string, unknown>;
  /** Where stage 2 will split the model (stage 1 caches the activations below it). */
  stage2: unknown;
  classes: string[];
  /** sha256 of each training and validation image's decoded pixels, and the labels, in order. */
  train: { digests: string[]; labels: ArrayLike<number> };
  valid: { digests: string[]; labels: ArrayLike<number> };
  /** sha256 of every layer's configuration and weights before training. */
  model: string;
  preprocessing: unknown;
  /** The backend as it runs (e.g. "wasm, SIMD, 2 threads") and tfjs's version. */
  engine: string;
  tfjs: string;
}

/** The key of stage 1's result (a string naming its parts; the disk cache hashes it). */
export async function stageOneKey(parts: StageKeyParts): Promise<string> {
  const options = { ...parts.options };
  for (const name of STAGE2_ONLY_OPTIONS) delete options[name];
  const set = (s: { digests: string[]; labels: ArrayLike<number> }) =>
    DiskCache.hash(s.digests.map((d, i) => `${d} ${s.labels[i]}`).join('\n'));
  return [
    FORMAT,
    `code ${await codeDigest()}`,
    `options ${JSON.stringify(options, Object.keys(options).sort())}`,
    `stage2 ${JSON.stringify(parts.stage2 ?? null)}`,
    `classes ${JSON.stringify(parts.classes)}`,
    `train ${set(parts.train)}`,
    `valid ${set(parts.valid)}`,
    `model ${parts.model}`,
    `preprocessing ${JSON.stringify(parts.preprocessing)}`,
    `engine ${parts.engine}`,
    `tfjs ${parts.tfjs}`,
  ].join('|');
}

/**
 * Stores the checkpoint in `dir` (as saved at the end of stage 1) under `key`: one entry, each
 * distinct file once (the frozen weights appear in the weights and the best epoch's sets alike).
 */
export async function storeStageResult(cache: DiskCache, key: string, dir: string): Promise<void> {
  const names = await checkpointFiles(dir);
  if (names.length === 0) return;
  const blobs: Buffer[] = [];
  const byDigest = new Map<string, number>();
  const files: { name: string; blob: number }[] = [];
  for (const name of names) {
    const bytes = await fs.readFile(path.join(dir, name));
    const digest = DiskCache.hash(bytes);
    let blob = byDigest.get(digest);
    if (blob === undefined) byDigest.set(digest, (blob = blobs.push(bytes) - 1));
    files.push({ name, blob });
  }
  const index = Buffer.from(JSON.stringify({ format: FORMAT, files, sizes: blobs.map((b) => b.length) }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(index.length);
  await cache.put(STAGE_KIND, key, Buffer.concat([length, index, ...blobs]));
}

/**
 * Writes the stored stage-1 checkpoint for `key` into `dir` (tensor files first, state.json last,
 * as a checkpoint is saved), with `run` as its run identity (so a resume checks this run's
 * options). Returns false on a miss; `dir` is then untouched.
 */
export async function restoreStageResult(cache: DiskCache, key: string, dir: string, run: Record<string, unknown>): Promise<boolean> {
  const payload = await cache.get(STAGE_KIND, key);
  if (!payload) return false;
  const buffer = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const indexLength = buffer.readUInt32LE(0);
  const index = JSON.parse(buffer.subarray(4, 4 + indexLength).toString('utf8')) as {
    format: string;
    files: { name: string; blob: number }[];
    sizes: number[];
  };
  if (index.format !== FORMAT) return false;
  const blobs: Buffer[] = [];
  let at = 4 + indexLength;
  for (const size of index.sizes) {
    blobs.push(buffer.subarray(at, at + size));
    at += size;
  }
  await fs.mkdir(dir, { recursive: true });
  const state = index.files.find((f) => f.name === CHECKPOINT_STATE_FILE)!;
  for (const f of index.files) if (f !== state) await writeFileAtomic(path.join(dir, path.basename(f.name)), blobs[f.blob]!);
  const stateJson = JSON.parse(blobs[state.blob]!.toString('utf8')) as Record<string, unknown>;
  await writeFileAtomic(path.join(dir, CHECKPOINT_STATE_FILE), JSON.stringify({ ...stateJson, run }));
  return true;
}

let codeDigestPromise: Promise<string> | undefined;

/**
 * sha256 of finetune's own compiled code (every file of the folder this module's parent is: dist/,
 * or src/ under the tests): a build that trains differently never reuses an older build's result.
 */
export function codeDigest(): Promise<string> {
  codeDigestPromise ??= (async () => {
    const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
    const hash = createHash('sha256');
    const files = (await fs.readdir(root, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile() && /\.(js|ts|mjs|wasm)$/.test(e.name) && !e.name.endsWith('.d.ts'))
      .map((e) => path.join(e.parentPath, e.name))
      .sort();
    for (const file of files) hash.update(`${path.relative(root, file)}\0`).update(await fs.readFile(file));
    return hash.digest('hex');
  })();
  return codeDigestPromise;
}
