/**
 * Multi-threaded WASM in Node.
 *
 * tfjs-backend-wasm 4.22 ships a threaded SIMD build (XNNPACK with a pthreadpool) but never uses it
 * in Node: its WASM_HAS_MULTITHREAD_SUPPORT flag is false there, and forcing it on fails because the
 * pthread workers are started from blob: URLs, which Node's Worker rejects. This module starts that
 * build itself (tfjs-internals.ts), replacing the 'wasm' backend's factory:
 *
 * - the pthread worker script, which the package ships only as a string, is written to a file that
 *   only this user can write (worker-script.ts), and checked before every worker starts from it;
 * - the module caps XNNPACK's threads at half the logical cores it is told of (it assumes two
 *   hyper-threads per core), so it is told twice the threads wanted;
 * - the workers are unref'd, so an idle thread pool doesn't keep the process alive.
 *
 * If the threaded build fails to start, the backend falls back to tfjs's own single-threaded one and
 * `wasmThreadsFallback()` says why.
 */
import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { isBackendStarted, startThreadedWasmBackend, threadedWasmWorkerScript, WASM_BACKEND_PRIORITY } from './tfjs-internals.js';
import { privateWorkerScript } from './worker-script.js';

/** The thread count asked for, tfjs's own factory for 'wasm', and why the threaded build fell back. */
let requested: number | undefined;
let original: (() => tf.KernelBackend | Promise<tf.KernelBackend>) | undefined;
let fallbackReason: string | undefined;

/** The number of threads `auto` gives WASM: every core this process may use. */
export function defaultWasmThreads(): number {
  return availableParallelism();
}

/**
 * Makes the 'wasm' backend start tfjs's threaded build with `threads` threads (1: tfjs's own
 * single-threaded build). Takes effect when the backend is first initialised; later calls with
 * another count change nothing once it runs (the module, and its memory, live as long as the
 * process). Returns false when that is the case.
 */
export function setWasmThreads(threads: number): boolean {
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a whole number ≥ 1, got ${threads}.`);
  if (requested === threads) return true;
  if (isBackendStarted('wasm')) return false;
  if (requested === undefined) original = tf.findBackendFactory('wasm') ?? undefined;
  requested = threads;
  if (!original) return false;
  const factory = threads === 1 ? original : () => startThreaded(threads);
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', factory, WASM_BACKEND_PRIORITY);
  return true;
}

/** Why the threaded build could not start, if it was asked for and tfjs's own build runs instead. */
export function wasmThreadsFallback(): string | undefined {
  return fallbackReason;
}

async function startThreaded(threads: number): Promise<tf.KernelBackend> {
  try {
    const worker = privateWorkerScript(threadedWasmWorkerScript());
    // Checked each time emscripten starts a worker from it: a file changed since it was written is never run.
    return await startThreadedWasmBackend(threads, () => worker.verifiedPath());
  } catch (e) {
    fallbackReason = `the threaded WASM build failed to start (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); running on 1 thread`;
    console.warn(`finetune: ${fallbackReason}.`);
    return original!();
  }
}
