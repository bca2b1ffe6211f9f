/**
 * The tfjs kernels finetune replaces, switched on or off as a whole, and checked at start-up.
 *
 * Each replacement (the convolution gradients and fast paths on WASM, ReLU6's one-kernel gradient,
 * the filter gradients on WebGPU) is run, when `initEngine` starts its backend, on tiny inputs that
 * take each of its paths, against what tfjs itself computes there: tfjs's own kernel on the same
 * backend, or, where that backend has none, tfjs's cpu kernel (or its ops). On a mismatch finetune
 * warns with one line naming the kernel and registers tfjs's instead. The check costs milliseconds.
 *
 * `initEngine(…, { kernels: 'tfjs' })` or FINETUNE_KERNELS=tfjs registers none of finetune's:
 * tfjs's own kernels run, and where the WASM backend has none (the convolution filter gradients,
 * both depthwise gradients), tfjs's cpu kernel runs on copies of the data (slow, but tfjs's).
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../errors.js';
import { mulberry32Uniforms } from '../data/rng.js';
import { RELU6_GRAD_REPLACEMENTS } from './relu6.js';
import { cpuKernelOnCopies, installKernel, registeredKernel, restoreTfjsKernel, runKernelFunc, tfjsKernel } from './tfjs-internals.js';
import { WASM_FAST_PATH_REPLACEMENTS } from './wasm-fast-paths.js';
import { WASM_TRAINING_REPLACEMENTS } from './wasm-kernels.js';
import { WEBGPU_TRAINING_REPLACEMENTS } from './webgpu-kernels.js';

/** Whose kernels run where finetune has replacements: finetune's (checked at start-up) or tfjs's own. */
export type KernelsMode = 'finetune' | 'tfjs';
export const KERNELS_MODES: readonly KernelsMode[] = ['finetune', 'tfjs'];

/** One input of a check case: seeded uniform values in `range` (default [−1, 1]), or the values given. */
export interface CheckInput {
  shape: number[];
  dtype?: 'float32' | 'int32';
  values?: number[];
  range?: [number, number];
}

/** A tiny input the start-up check runs a replacement on. */
export interface KernelCheckCase {
  inputs: Record<string, CheckInput>;
  attrs?: Record<string, unknown>;
}

export interface KernelReplacement {
  kernelName: string;
  backendName: 'wasm' | 'webgpu' | 'cpu';
  kernelFunc: tf.KernelFunc;
  /**
   * What runs when replacements are off or this one fails its check:
   * - 'tfjs': tfjs's own kernel for this backend (nothing is replaced until tfjs has registered it);
   * - 'cpu': tfjs's cpu kernel on copies of the data (the backend has no such kernel);
   * - 'ops': no kernel; the caller computes with tfjs ops (`reference` gives the same values).
   */
  fallback: 'tfjs' | 'cpu' | 'ops';
  /** For fallback 'ops': what the kernel must compute, from tfjs ops. */
  reference?: (inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap) => tf.Tensor;
  /** Tiny inputs that take each of its paths. */
  checks: KernelCheckCase[];
}

/** A replacement that failed its start-up check, and why. */
export interface KernelCheckFailure {
  kernel: string;
  backend: string;
  problem: string;
}

/** The largest relative difference (max |a − b| / max |b|) a replacement may show against tfjs: float32 sums in another order. */
export const CHECK_TOLERANCE = 1e-4;

const REPLACEMENTS: KernelReplacement[] = [
  ...WASM_TRAINING_REPLACEMENTS,
  ...WASM_FAST_PATH_REPLACEMENTS,
  ...RELU6_GRAD_REPLACEMENTS,
  ...WEBGPU_TRAINING_REPLACEMENTS,
];

/** Each replacement's check result, by its kernel function: undefined passed, else the problem. */
const results = new Map<tf.KernelFunc, string | undefined>();
/** One cpu fallback function per kernel, so that registering it again is a no-op. */
const cpuFallbacks = new Map<string, tf.KernelFunc>();

/** The replacements for one backend. */
export function replacementsFor(backendName: string): KernelReplacement[] {
  return REPLACEMENTS.filter((r) => r.backendName === backendName);
}

/** The mode asked for: the option, else FINETUNE_KERNELS, else 'finetune'. Throws a UsageError for anything else. */
export function kernelsMode(option?: KernelsMode): KernelsMode {
  if (option !== undefined) return checkMode(option, 'kernels');
  const fromEnv = process.env.FINETUNE_KERNELS;
  if (fromEnv !== undefined && fromEnv.trim() !== '') return checkMode(fromEnv.trim(), 'FINETUNE_KERNELS');
  return 'finetune';
}

function checkMode(value: string, what: string): KernelsMode {
  if ((KERNELS_MODES as readonly string[]).includes(value)) return value as KernelsMode;
  throw new UsageError(`${what} must be ${KERNELS_MODES.join(' or ')}, got '${value}'.`);
}

/**
 * Registers, for one backend, finetune's replacements (mode 'finetune'; those that failed their
 * check stay on tfjs's) or tfjs's kernels (mode 'tfjs'). Idempotent; before or after the backend starts.
 */
export function installKernels(backendName: string, mode: KernelsMode): void {
  for (const r of replacementsFor(backendName)) {
    if (mode === 'finetune' && results.get(r.kernelFunc) === undefined) installReplacement(r);
    else installFallback(r);
  }
}

function installReplacement(r: KernelReplacement): void {
  // Nothing to replace yet (tfjs-backend-webgpu registers its kernels when first imported).
  if (r.fallback === 'tfjs' && !tfjsKernel(r.kernelName, r.backendName)) return;
  installKernel(r.kernelName, r.backendName, r.kernelFunc);
}

function installFallback(r: KernelReplacement): void {
  if (r.fallback === 'cpu') installKernel(r.kernelName, r.backendName, cpuFallback(r.kernelName));
  else restoreTfjsKernel(r.kernelName, r.backendName); // 'ops': tfjs has none, so none is left
}

function cpuFallback(kernelName: string): tf.KernelFunc {
  let f = cpuFallbacks.get(kernelName);
  if (!f) {
    f = cpuKernelOnCopies(kernelName);
    cpuFallbacks.set(kernelName, f);
  }
  return f;
}

/** What runs for a replaced kernel now, on one backend. */
export type KernelInUse = 'finetune' | 'tfjs' | 'tfjs-cpu' | 'tfjs-ops' | 'none';

/** For each kernel finetune replaces on `backendName`, what is registered now. */
export function kernelsInUse(backendName: string): Record<string, KernelInUse> {
  const inUse: Record<string, KernelInUse> = {};
  for (const r of replacementsFor(backendName)) {
    const current = registeredKernel(r.kernelName, r.backendName);
    inUse[r.kernelName] =
      current === undefined
        ? r.fallback === 'ops' ? 'tfjs-ops' : 'none'
        : current === r.kernelFunc
          ? 'finetune'
          : current === tfjsKernel(r.kernelName, r.backendName)
            ? 'tfjs'
            : current === cpuFallbacks.get(r.kernelName)
              ? 'tfjs-cpu'
              : 'none';
  }
  return inUse;
}

/**
 * Checks every replacement registered for the active backend that has not been checked yet; each
 * one that fails is replaced by tfjs's kernel, with a one-line warning. Returns every failure seen
 * on this backend so far.
 */
export async function checkKernels(): Promise<KernelCheckFailure[]> {
  const backendName = tf.getBackend();
  for (const r of replacementsFor(backendName)) {
    if (results.has(r.kernelFunc) || registeredKernel(r.kernelName, backendName) !== r.kernelFunc) continue;
    const problem = await checkReplacement(r);
    results.set(r.kernelFunc, problem);
    if (problem === undefined) continue;
    installFallback(r);
    const instead = { tfjs: "tfjs's own kernel", cpu: "tfjs's cpu kernel (slower)", ops: 'tfjs ops' }[r.fallback];
    console.warn(`finetune: kernel ${r.kernelName} (${backendName}) failed its start-up check (${problem}); using ${instead} instead.`);
  }
  return replacementsFor(backendName).flatMap((r) => {
    const problem = results.get(r.kernelFunc);
    return problem === undefined ? [] : [{ kernel: r.kernelName, backend: backendName, problem }];
  });
}

/**
 * Test hook: makes `kernelFunc` finetune's replacement for (kernel, backend), unchecked, as if it
 * were the one shipped; the next `initEngine` checks it. Returns a function that undoes it.
 */
export function replaceKernelForTesting(kernelName: string, backendName: string, kernelFunc: tf.KernelFunc): () => void {
  const r = REPLACEMENTS.find((x) => x.kernelName === kernelName && x.backendName === backendName);
  if (!r) throw new Error(`finetune replaces no ${kernelName} kernel on ${backendName}.`);
  const before = r.kernelFunc;
  r.kernelFunc = kernelFunc;
  return () => {
    r.kernelFunc = before;
  };
}

// ── The check ───────────────────────────────────────────────────────────────────────────────────

/** Why the replacement disagrees with tfjs on one of its cases; undefined if it agrees on all. */
async function checkReplacement(r: KernelReplacement): Promise<string | undefined> {
  for (const [i, c] of r.checks.entries()) {
    const problem = await checkCase(r, c, 1 + i);
    if (problem !== undefined) return `${problem}, on ${describeCase(c)}`;
  }
  return undefined;
}

async function checkCase(r: KernelReplacement, c: KernelCheckCase, seed: number): Promise<string | undefined> {
  const attrs = (c.attrs ?? {}) as tf.NamedAttrMap;
  const inputs: tf.NamedTensorMap = {};
  const made: tf.Tensor[] = [];
  try {
    for (const [name, spec] of Object.entries(c.inputs)) {
      inputs[name] = tf.tensor(spec.values ?? seededValues(spec, seed * 31 + made.length), spec.shape, spec.dtype ?? 'float32');
      made.push(inputs[name]!);
    }
    let ours: tf.Tensor[];
    try {
      ours = runKernelFunc(r.kernelFunc, inputs, attrs);
    } catch (e) {
      return `it threw: ${firstLine(e)}`;
    }
    made.push(...ours);
    const expected = reference(r, inputs, attrs);
    made.push(...expected);
    if (ours.length !== expected.length) return `${ours.length} outputs where tfjs gives ${expected.length}`;
    for (let k = 0; k < ours.length; k++) {
      const problem = await compare(ours[k]!, expected[k]!);
      if (problem !== undefined) return ours.length > 1 ? `output ${k}: ${problem}` : problem;
    }
    return undefined;
  } finally {
    tf.dispose(made);
  }
}

/** tfjs's values for the case, on the active backend. */
function reference(r: KernelReplacement, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap): tf.Tensor[] {
  if (r.fallback === 'ops') return [tf.tidy(() => r.reference!(inputs, attrs))];
  const func = r.fallback === 'tfjs' ? tfjsKernel(r.kernelName, r.backendName) : cpuFallback(r.kernelName);
  if (!func) throw new Error(`tfjs has no ${r.kernelName} kernel for ${r.backendName} to check against.`);
  return runKernelFunc(func, inputs, attrs);
}

async function compare(ours: tf.Tensor, theirs: tf.Tensor): Promise<string | undefined> {
  if (!tf.util.arraysEqual(ours.shape, theirs.shape)) return `shape [${ours.shape.join(', ')}] where tfjs gives [${theirs.shape.join(', ')}]`;
  if (ours.dtype !== theirs.dtype) return `dtype ${ours.dtype} where tfjs gives ${theirs.dtype}`;
  const [a, b] = (await Promise.all([ours.data(), theirs.data()])) as [ArrayLike<number>, ArrayLike<number>];
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    if (Number.isNaN(a[i]!) !== Number.isNaN(b[i]!)) return `value ${i} is ${a[i]} where tfjs gives ${b[i]}`;
    if (Number.isNaN(b[i]!)) continue;
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  const relative = diff / Math.max(scale, 1e-30);
  return relative > CHECK_TOLERANCE ? `relative error ${relative.toExponential(1)} against tfjs` : undefined;
}

/** Deterministic uniform values in the input's range (mulberry32). */
function seededValues(spec: CheckInput, seed: number): number[] {
  const [lo, hi] = spec.range ?? [-1, 1];
  return Array.from(mulberry32Uniforms(tf.util.sizeFromShape(spec.shape), seed), (u) =>
    spec.dtype === 'int32' ? Math.floor(lo + u * (hi - lo)) : lo + u * (hi - lo),
  );
}

function describeCase(c: KernelCheckCase): string {
  const inputs = Object.entries(c.inputs).map(([name, s]) => `${name} ${s.shape.join('×')}`);
  const attrs = Object.entries(c.attrs ?? {}).map(([k, v]) => `${k} ${JSON.stringify(v)}`);
  return [...inputs, ...attrs].join(', ');
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}
