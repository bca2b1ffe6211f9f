/**
 * Multi-threaded WASM in Node.
 *
 * tfjs-backend-wasm 4.22 ships a threaded SIMD build (XNNPACK with a pthreadpool) but never uses it
 * in Node: its WASM_HAS_MULTITHREAD_SUPPORT flag is false there, and forcing it on fails because the
 * pthread workers are started from blob: URLs, which Node's Worker rejects. This module starts that
 * build itself, replacing the 'wasm' backend's factory:
 *
 * - the pthread worker script, which the package ships only as a string, is written once to a file
 *   in the OS temp folder, and the workers load the main script from its path in node_modules;
 * - the module caps XNNPACK's threads at half the logical cores it is told of (it assumes two
 *   hyper-threads per core), so it is told twice the threads wanted;
 * - the workers are unref'd, so an idle thread pool doesn't keep the process alive.
 *
 * If the threaded build fails to start, the backend falls back to tfjs's own single-threaded one and
 * `wasmThreadsFallback()` says why.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const require = createRequire(import.meta.url);

/** The build this module starts, in the package's wasm-out folder. */
const BUILD = 'tfjs-backend-wasm-threaded-simd';
/** tfjs-backend-wasm's own priority for 'wasm' (base.ts). */
const WASM_PRIORITY = 2;

/** The emscripten module, as far as this file uses it. */
interface EmscriptenModule {
  cwrap(name: string, returnType: string | null, argTypes: string[]): (...args: number[]) => number;
  PThread: { runningWorkers: Array<{ unref(): void }>; unusedWorkers: Array<{ unref(): void }> };
}
type EmscriptenFactory = (config: Record<string, unknown>) => Promise<EmscriptenModule>;
interface WasmImports {
  env: Record<string, unknown>;
}
/** The WebAssembly API as used here (this project's lib has no WebAssembly types). */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: WasmImports) => { exports: object };
}
const WA = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

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
  if (isWasmStarted()) return false;
  if (requested === undefined) original = tf.findBackendFactory('wasm') ?? undefined;
  requested = threads;
  if (!original) return false;
  const factory = threads === 1 ? original : () => startThreaded(threads);
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', factory, WASM_PRIORITY);
  return true;
}

/** Why the threaded build could not start, if it was asked for and tfjs's own build runs instead. */
export function wasmThreadsFallback(): string | undefined {
  return fallbackReason;
}

function isWasmStarted(): boolean {
  try {
    // The engine keeps initialised backends in `registry`; findBackend starts none.
    return (tf.engine() as unknown as { registry: Record<string, unknown> }).registry.wasm !== undefined;
  } catch {
    return false;
  }
}

async function startThreaded(threads: number): Promise<tf.KernelBackend> {
  try {
    return await startThreadedBuild(threads);
  } catch (e) {
    fallbackReason = `the threaded WASM build failed to start (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); running on 1 thread`;
    console.warn(`finetune: ${fallbackReason}.`);
    return original!();
  }
}

async function startThreadedBuild(threads: number): Promise<tf.KernelBackend> {
  const out = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
  const mainScript = join(out, `${BUILD}.js`);
  const wasmFile = join(out, `${BUILD}.wasm`);
  const workerScript = writeWorkerScript(join(out, `${BUILD}.worker.js`));
  const factory = require(mainScript) as EmscriptenFactory;

  const module = await factory({
    locateFile: (path: string, prefix: string) =>
      path.endsWith('.worker.js') ? workerScript : path.endsWith('.wasm') ? wasmFile : prefix + path,
    // A path, not a Blob: the workers read it with fs.
    mainScriptUrlOrBlob: mainScript,
    instantiateWasm: (imports: WasmImports, receive: (instance: { exports: object }, module: object) => void) => {
      // init_with_threads_count caps the pool at emscripten_num_logical_cores() / 2.
      imports.env.emscripten_num_logical_cores = () => 2 * threads;
      // Synchronously, so that a failure rejects the factory's promise (emscripten catches it here).
      const compiled = new WA.Module(readFileSync(wasmFile));
      const instance = new WA.Instance(compiled, imports);
      receive(instance, compiled);
      return instance.exports;
    },
  });
  // What tfjs's init() adds before handing the module to BackendWasm.
  const wasm = module as EmscriptenModule & { tfjs?: Record<string, unknown> };
  wasm.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  const backend = new BackendWasm(wasm as unknown as ConstructorParameters<typeof BackendWasm>[0]);
  // The pool's threads wait for work forever; they must not hold the process open.
  for (const w of [...module.PThread.runningWorkers, ...module.PThread.unusedWorkers]) w.unref();
  return backend;
}

/**
 * Writes the package's pthread worker script (a string export of `<build>.worker.js`) to a file
 * named by its hash, once per machine, atomically. Returns its path.
 */
function writeWorkerScript(exportingModule: string): string {
  const { wasmWorkerContents } = require(exportingModule) as { wasmWorkerContents: string };
  // As tfjs does for its Blob: the export holds real newlines where the script has "\n" escapes.
  const script = wasmWorkerContents.replace(/\n/g, '\\n');
  const hash = createHash('sha256').update(script).digest('hex').slice(0, 16);
  const path = join(tmpdir(), `finetune-wasm-worker-${hash}.cjs`);
  if (!existsSync(path)) {
    const temp = `${path}.${process.pid}.tmp`;
    writeFileSync(temp, script);
    renameSync(temp, path);
  }
  return path;
}
