/**
 * Every place finetune reaches past TensorFlow.js's documented API, in one file.
 *
 * Written against @tensorflow/tfjs, @tensorflow/tfjs-backend-wasm, @tensorflow/tfjs-backend-webgpu and
 * @tensorflow/tfjs-node 4.22.0 (package.json pins them exactly). What is used here is typed in their .d.ts files but not
 * documented or promised across versions: the kernel registry, calling a kernel function directly,
 * the WASM backend's heap and emscripten module, its threaded build's files, the WebGPU backend's
 * `runWebGPUProgram` (and, for shaders with several outputs, its device, tensor map, pipeline cache
 * and command encoder), the cpu backend's data store and first-use banner, tfjs-node's device fields. On a tfjs upgrade, re-read
 * this file against tfjs's sources; the start-up kernel check (kernel-overrides.ts) catches a
 * replaced kernel that then computes something else.
 *
 * The rest of src/engine uses these small typed functions and never casts a tfjs object.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorflowBackendLike } from './tensorflow-device.js';

const require = createRequire(import.meta.url);

export type TensorInfo = tf.TensorInfo;
/** tfjs-backend-wasm's backend class: tensors live in its WebAssembly heap. */
export type WasmBackend = BackendWasm;

// ── Kernel registry ─────────────────────────────────────────────────────────────────────────────
//
// tfjs keeps one global table of kernels by (kernel name, backend name). finetune replaces some
// entries and keeps tfjs's own config (with its setupFunc, which binds the C++ function when the
// wasm backend starts) so that it can fall back to it or restore it.

const kernelKey = (kernelName: string, backendName: string): string => `${backendName}/${kernelName}`;
/** tfjs's own kernel configs, as found before finetune first replaced them. */
const tfjsConfigs = new Map<string, tf.KernelConfig>();
/** Every kernel function finetune has registered. */
const finetuneFuncs = new WeakSet<tf.KernelFunc>();

/** The kernel function registered now for (kernel, backend), if any. */
export function registeredKernel(kernelName: string, backendName: string): tf.KernelFunc | undefined {
  return tf.getKernel(kernelName, backendName)?.kernelFunc;
}

/**
 * tfjs's own kernel for (kernel, backend), whether or not it is registered now; undefined where
 * tfjs has none (the wasm backend has no convolution filter gradient, for instance).
 */
export function tfjsKernel(kernelName: string, backendName: string): tf.KernelFunc | undefined {
  return tfjsConfig(kernelName, backendName)?.kernelFunc;
}

function tfjsConfig(kernelName: string, backendName: string): tf.KernelConfig | undefined {
  const key = kernelKey(kernelName, backendName);
  const kept = tfjsConfigs.get(key);
  if (kept) return kept;
  const current = tf.getKernel(kernelName, backendName);
  if (!current || finetuneFuncs.has(current.kernelFunc)) return undefined;
  tfjsConfigs.set(key, current);
  return current;
}

/**
 * Registers `kernelFunc` for (kernel, backend) in place of whatever is there, carrying over tfjs's
 * setupFunc and disposeFunc. Idempotent.
 */
export function installKernel(kernelName: string, backendName: string, kernelFunc: tf.KernelFunc): void {
  const own = tfjsConfig(kernelName, backendName); // kept before it is replaced
  if (own?.kernelFunc !== kernelFunc) finetuneFuncs.add(kernelFunc);
  const current = tf.getKernel(kernelName, backendName);
  if (current?.kernelFunc === kernelFunc) return;
  // Registering over a registered kernel without unregistering it first makes tfjs log a warning.
  if (current) tf.unregisterKernel(kernelName, backendName);
  tf.registerKernel({ ...own, kernelName, backendName, kernelFunc });
}

/** Puts tfjs's own kernel back for (kernel, backend); where tfjs has none, leaves none. */
export function restoreTfjsKernel(kernelName: string, backendName: string): void {
  const own = tfjsConfig(kernelName, backendName);
  const current = tf.getKernel(kernelName, backendName);
  if (own && current?.kernelFunc === own.kernelFunc) return;
  if (current) tf.unregisterKernel(kernelName, backendName);
  if (own) tf.registerKernel(own);
}

/** Types a kernel written for one backend class as a tfjs kernel function (tfjs types `backend` loosely). */
export function kernelFunc<B = tf.KernelBackend, A = { inputs: tf.NamedTensorInfoMap; backend: B; attrs: tf.NamedAttrMap }>(
  fn: (args: A) => TensorInfo | TensorInfo[],
): tf.KernelFunc {
  return fn as unknown as tf.KernelFunc;
}

/** Runs the kernel registered for the active backend, as the ops do (recorded on the gradient tape). */
export function runKernel(kernelName: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(kernelName, inputs, attrs) as tf.Tensor | tf.Tensor[];
}

/**
 * Runs one kernel function, registered or not, on the active backend, and wraps its outputs as
 * tensors the way the engine does a kernel's (no gradient recorded). For checking a kernel against
 * another on the same inputs.
 */
export function runKernelFunc(func: tf.KernelFunc, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}): tf.Tensor[] {
  const engine = tf.engine();
  const backend = engine.backend;
  const out = func({ inputs, backend, attrs });
  return (Array.isArray(out) ? out : [out]).map((info) => engine.makeTensorFromTensorInfo(info, backend));
}

/**
 * A kernel function that runs tfjs's cpu kernel on copies of its inputs and copies the outputs back
 * to the backend it was called on: tfjs's own arithmetic where that backend has no such kernel.
 * Slow (two copies); for backends that can read synchronously (wasm, cpu).
 */
export function cpuKernelOnCopies(kernelName: string): tf.KernelFunc {
  return ({ inputs, backend: from, attrs }) => {
    const backend = from as tf.KernelBackend;
    const cpuKernel = tf.getKernel(kernelName, 'cpu');
    if (!cpuKernel) throw new Error(`tfjs's cpu backend has no ${kernelName} kernel.`);
    const cpu = cpuBackend();
    const copies: tf.NamedTensorInfoMap = {};
    for (const [name, info] of Object.entries(inputs)) {
      if (!info) continue;
      copies[name] = { dataId: cpu.write(backend.readSync(info.dataId), info.shape, info.dtype), shape: info.shape, dtype: info.dtype };
    }
    const result = cpuKernel.kernelFunc({ inputs: copies, backend: cpu, attrs });
    const outputs = Array.isArray(result) ? result : [result];
    const back = outputs.map((o) => ({ dataId: backend.write(cpu.readSync(o.dataId), o.shape, o.dtype), shape: o.shape, dtype: o.dtype }));
    const cpuData = new Set<object>([...Object.values(copies).map((c) => c!.dataId), ...outputs.map((o) => o.dataId)]);
    for (const dataId of cpuData) cpu.disposeData(dataId, true);
    return Array.isArray(result) ? back : back[0]!;
  };
}

// ── Backends ────────────────────────────────────────────────────────────────────────────────────

/** Whether a backend has been started (the engine keeps started backends in `registry`; `tf.findBackend` would start one). */
export function isBackendStarted(backendName: string): boolean {
  return tf.engine().registry[backendName] !== undefined;
}

/** tfjs-backend-wasm's priority for 'wasm' (its base.ts), to re-register the backend with. */
export const WASM_BACKEND_PRIORITY = 2;

/** The parts of tfjs-backend-cpu's MathBackendCPU used here. */
interface CpuBackend extends tf.KernelBackend {
  data: { get(dataId: object): { values: tf.backend_util.BackendValues } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): TensorInfo;
}

/** The cpu backend (started if it wasn't), its "you are running TensorFlow.js in Node.js" banner silenced. */
function cpuBackend(): CpuBackend {
  silenceCpuBanner();
  return tf.findBackend('cpu') as CpuBackend;
}

/**
 * tfjs-backend-cpu prints "Hi, looks like you are running TensorFlow.js in Node.js…" the first time
 * it stores data. finetune says which backend it runs and why (`finetune doctor`), and uses cpu for
 * checks and references the user never asked for, so the banner is switched off.
 */
export function silenceCpuBanner(): void {
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && cpu.firstUse === true) cpu.firstUse = false;
}

/** A cpu-backend tensor's values, in place. */
export function cpuValues(backend: tf.KernelBackend, info: TensorInfo): Float32Array {
  return (backend as CpuBackend).data.get(info.dataId).values as Float32Array;
}

/** A new cpu-backend output holding `values`. */
export function cpuOutput(backend: tf.KernelBackend, shape: number[], values: Float32Array): TensorInfo {
  return (backend as CpuBackend).makeTensorInfo(shape, 'float32', values);
}

// ── The WASM backend's heap ─────────────────────────────────────────────────────────────────────
//
// Every wasm tensor lives in the module's heap. Allocating may grow the heap and detach every typed
// array taken before, so views are taken after the last allocation that precedes their use.

/** A new output tensor in the heap (uninitialised). */
export function wasmAllocate(backend: WasmBackend, shape: number[], dtype: tf.DataType = 'float32'): TensorInfo {
  return backend.makeOutput(shape, dtype);
}

/** A view of a tensor's values in the heap (valid until the next allocation). */
export function wasmValues(backend: WasmBackend, info: TensorInfo): tf.TypedArray {
  return backend.typedArrayFromHeap(info);
}

/** A view of a float32 tensor's values in the heap (valid until the next allocation). */
export function wasmFloats(backend: WasmBackend, info: TensorInfo): Float32Array {
  return backend.typedArrayFromHeap(info) as Float32Array;
}

/** Frees a tensor made by a kernel for its own use. */
export function wasmFree(backend: WasmBackend, info: TensorInfo): void {
  backend.disposeData(info.dataId);
}

/** Another reference to a tensor's data, as a kernel output (tensors are immutable; no copy). */
export function wasmShare(backend: WasmBackend, info: TensorInfo): TensorInfo {
  backend.incRef(info.dataId);
  return { dataId: info.dataId, shape: info.shape, dtype: info.dtype };
}

/** Where a tensor's data starts in the heap, in bytes. */
export function wasmByteOffset(backend: WasmBackend, info: TensorInfo): number {
  return backend.getMemoryOffset(info.dataId);
}

/** The emscripten module's WebAssembly.Memory (`asm.memory`, or `wasmMemory` in the threaded build). */
export function wasmMemory(backend: WasmBackend): unknown {
  const module = backend.wasm as unknown as { asm?: { memory?: unknown }; wasmMemory?: unknown };
  return module.asm?.memory ?? module.wasmMemory;
}

// ── The WASM backend's threaded build ───────────────────────────────────────────────────────────
//
// tfjs-backend-wasm ships `wasm-out/tfjs-backend-wasm-threaded-simd.{js,wasm}` (an emscripten
// build with a pthread pool) and its pthread worker script only as a string export of
// `….worker.js`. Its own init() never starts that build in Node; wasm-threads.ts does, with these.

const THREADED_BUILD = 'tfjs-backend-wasm-threaded-simd';

function wasmOutFolder(): string {
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
}

/** The pthread worker script's text, as tfjs writes it into its Blob. */
export function threadedWasmWorkerScript(): string {
  const { wasmWorkerContents } = require(join(wasmOutFolder(), `${THREADED_BUILD}.worker.js`)) as { wasmWorkerContents: string };
  // The export holds real newlines where the script has "\n" escapes (tfjs does the same).
  return wasmWorkerContents.replace(/\n/g, '\\n');
}

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

/**
 * Starts the threaded build with `threads` XNNPACK threads and returns it as a BackendWasm.
 * `workerScriptPath` is asked for the worker script's file each time emscripten starts a worker (it
 * may throw, which fails the start). The workers load the main script from node_modules.
 */
export async function startThreadedWasmBackend(threads: number, workerScriptPath: () => string): Promise<tf.KernelBackend> {
  const out = wasmOutFolder();
  const mainScript = join(out, `${THREADED_BUILD}.js`);
  const wasmFile = join(out, `${THREADED_BUILD}.wasm`);
  const factory = require(mainScript) as EmscriptenFactory;

  const module = await factory({
    locateFile: (path: string, prefix: string) =>
      path.endsWith('.worker.js') ? workerScriptPath() : path.endsWith('.wasm') ? wasmFile : prefix + path,
    // A path, not a Blob: the workers read it with fs.
    mainScriptUrlOrBlob: mainScript,
    instantiateWasm: (imports: WasmImports, receive: (instance: { exports: object }, module: object) => void) => {
      // init_with_threads_count caps the pool at emscripten_num_logical_cores() / 2 (it assumes two
      // hyper-threads per core), so it is told twice the threads wanted.
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

// ── The native TensorFlow backend ───────────────────────────────────────────────────────────────

/**
 * Starts tfjs-node's 'tensorflow' backend without switching to it (which is what makes it ask
 * libtensorflow for its devices) and returns it, for its private `isUsingGpuDevice` and
 * `binding.TF_Version` (tensorflow-device.ts reads them); null if it failed to start.
 */
export function startTensorflowBackend(): TensorflowBackendLike | null {
  return tf.findBackend('tensorflow') as unknown as TensorflowBackendLike | null;
}

// ── The WebGPU backend ──────────────────────────────────────────────────────────────────────────
//
// The package is an optional dependency that registers its backend only if `navigator.gpu` exists
// when first imported, so it is never imported here: its API is declared structurally.

/**
 * A compute shader for `runWebGPUProgram` (tfjs-backend-webgpu's webgpu_program.ts). The backend
 * prepends to `getUserCode()` the storage bindings `result` (output) and one `array<f32>` per
 * `variableNames` entry, and a `uniforms` struct holding `<name>Shape`/`<name>ShapeStrides` per
 * input, `outShape`/`outShapeStrides`, `size` (when `size` is set) and then the fields declared in
 * `uniforms`, in that order. It calls `main(index)` when `dispatchLayout` has only `x`, else
 * `main()`; private copies of the builtins are in `localId`, `localIndex`, `globalId`,
 * `workgroupId`, `numWorkgroups`.
 */
export interface WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y?: number[]; z?: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  uniforms?: string;
  workgroupSize: [number, number, number];
  size?: boolean;
  getUserCode(): string;
}

export type ProgramUniforms = { type: 'int32' | 'float32' | 'uint32'; data: number[] }[];

interface WebGPUBackend {
  runWebGPUProgram(program: WebGPUProgram, inputs: TensorInfo[], outputDtype: tf.DataType, uniforms?: ProgramUniforms): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

/** Runs a shader on the WebGPU backend; its output is a new tensor. */
export function runWebGPUProgram(
  backend: tf.KernelBackend, program: WebGPUProgram, inputs: TensorInfo[], outputDtype: tf.DataType, uniforms?: ProgramUniforms,
): TensorInfo {
  return (backend as unknown as WebGPUBackend).runWebGPUProgram(program, inputs, outputDtype, uniforms);
}

/** Frees a tensor a kernel made for its own use. */
export function freeData(backend: tf.KernelBackend, info: TensorInfo): void {
  backend.disposeData(info.dataId);
}

// ── Shaders with several outputs ────────────────────────────────────────────────────────────────
//
// runWebGPUProgram binds one output (read_write) and read-only inputs, so a shader writes one
// tensor. Some work is one pass over the data that yields several tensors (a batch norm's γ and β
// gradients; Adam's update of many variables and their moments): as separate programs it costs one
// dispatch each. `runRawWebGPUShader` records one dispatch of a complete WGSL shader whose bindings
// are the given tensors' buffers, in order (any may be declared read_write), then the uniforms;
// it does what tfjs-backend-webgpu 4.22's `recordAndSubmit` does around a dispatch (bind group,
// the backend's compute pass, submitting every WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE dispatches, the
// buffers marked in use by the queue), except timestamp queries: under tf.time/tf.profile its time
// is not measured.

/** A complete compute shader for `runRawWebGPUShader`. */
export interface RawWebGPUShader {
  /** Names the compiled pipeline (same key, same WGSL). */
  key: string;
  /** Bindings 0…n−1: the buffers passed, in order; binding n: `uniforms` when given. Entry point `main`. */
  code: string;
  dispatch: [number, number, number];
  /** What the dispatch counter calls it (a shader class name, as runWebGPUProgram's programs). */
  name: string;
}

interface RawWebGPUBackend {
  device: {
    createShaderModule(d: { code: string }): unknown;
    createComputePipeline(d: { layout: 'auto'; compute: { module: unknown; entryPoint: string } }): { getBindGroupLayout(i: number): unknown };
    createBindGroup(d: { layout: unknown; entries: Array<{ binding: number; resource: unknown }> }): unknown;
    limits: { maxStorageBuffersPerShaderStage: number };
  };
  tensorMap: { get(dataId: object): { resource?: unknown; values?: unknown } };
  pipelineCache: Record<string, unknown>;
  commandQueueOwnedIds: WeakSet<object>;
  computePassEncoder: { setPipeline(p: unknown): void; setBindGroup(i: number, g: unknown): void; dispatchWorkgroups(x: number, y: number, z: number): void } | null;
  commandEncoder: { beginComputePass(d: object): RawWebGPUBackend['computePassEncoder'] };
  dispatchCountInPass: number;
  makeTensorInfo(shape: number[], dtype: tf.DataType): TensorInfo;
  uploadToGPU(dataId: object): void;
  makeUniforms(uniforms: ProgramUniforms): unknown;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

/** Listeners told of each raw dispatch (hookWebGPUWork's). */
const rawDispatchListeners = new Set<(name: string) => void>();

/** The WebGPU backend's storage-buffer bindings per shader stage (what the device was created with). */
export function maxStorageBuffersPerStage(backend: tf.KernelBackend): number {
  return (backend as unknown as RawWebGPUBackend).device.limits.maxStorageBuffersPerShaderStage;
}

/** A new float32 (or `dtype`) tensor on the GPU, for a raw shader to write. */
export function makeGPUOutput(backend: tf.KernelBackend, shape: number[], dtype: tf.DataType = 'float32'): TensorInfo {
  const b = backend as unknown as RawWebGPUBackend;
  const info = b.makeTensorInfo(shape, dtype);
  b.uploadToGPU(info.dataId);
  return info;
}

/**
 * Records one dispatch of `shader` with `buffers` bound in order (inputs, outputs made by
 * makeGPUOutput, or tensors the shader updates in place). Any CPU copy of a bound tensor is dropped:
 * the shader may write it, and the GPU's copy is the one that counts from here on.
 */
export function runRawWebGPUShader(backend: tf.KernelBackend, shader: RawWebGPUShader, buffers: TensorInfo[], uniforms?: ProgramUniforms): void {
  const b = backend as unknown as RawWebGPUBackend;
  const entries: Array<{ binding: number; resource: unknown }> = buffers.map((info, i) => {
    b.uploadToGPU(info.dataId);
    const data = b.tensorMap.get(info.dataId);
    data.values = null;
    b.commandQueueOwnedIds.add(info.dataId);
    return { binding: i, resource: { buffer: data.resource } };
  });
  if (uniforms) entries.push({ binding: buffers.length, resource: b.makeUniforms(uniforms) });
  let pipeline = b.pipelineCache[shader.key] as ReturnType<RawWebGPUBackend['device']['createComputePipeline']> | undefined;
  if (!pipeline) {
    const module = b.device.createShaderModule({ code: shader.code });
    pipeline = b.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    b.pipelineCache[shader.key] = pipeline;
  }
  const bindGroup = b.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  b.ensureCommandEncoderReady();
  b.computePassEncoder ??= b.commandEncoder.beginComputePass({});
  b.computePassEncoder!.setPipeline(pipeline);
  b.computePassEncoder!.setBindGroup(0, bindGroup);
  b.computePassEncoder!.dispatchWorkgroups(...shader.dispatch);
  b.dispatchCountInPass++;
  for (const listener of rawDispatchListeners) listener(shader.name);
  if (tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') as number <= b.dispatchCountInPass) {
    b.endComputePassEncoder();
    b.submitQueue();
  }
}

// ── Counting the WebGPU backend's work ──────────────────────────────────────────────────────────
//
// What a training step costs a GPU beyond its arithmetic is mostly per-operation: each program
// dispatched, each buffer taken from the pool, each read back to the CPU. These hooks see them at
// the points tfjs-backend-webgpu 4.22 does them: `runWebGPUProgram` (every shader; and finetune's
// raw shaders, `runRawWebGPUShader`), its buffer
// manager's `acquireBuffer` (outputs, uploads, uniforms, staging; a new GPU buffer when its pool
// has none of that size and usage) and `getBufferData` (every GPU→CPU read of `data()`), plus the
// engine's `runKernelFunc` (every kernel and custom-gradient op, for naming what dispatched).

/** What the WebGPU backend just did. */
export interface WebGPUWorkHooks {
  /** A shader was dispatched; `program` is its class name (e.g. BinaryOpProgram). */
  dispatch?(program: string): void;
  /** A buffer was taken from the pool; `created` when the pool had none and a GPU buffer was made. */
  acquire?(bytes: number, created: boolean): void;
  /** A buffer was read back to the CPU. */
  read?(bytes: number): void;
}

interface WebGPUBackendWork {
  runWebGPUProgram(program: WebGPUProgram, ...rest: unknown[]): TensorInfo;
  getBufferData(buffer: { size: number }): Promise<ArrayBuffer>;
  bufferManager: { numBytesAllocated: number; acquireBuffer(size: number, ...rest: unknown[]): unknown };
}

/**
 * Calls `hooks` as the active WebGPU backend works, until the returned function is called. Throws
 * when the active backend is not webgpu. Hooks nest: each later one wraps the earlier ones.
 */
export function hookWebGPUWork(hooks: WebGPUWorkHooks): () => void {
  if (tf.getBackend() !== 'webgpu') throw new Error(`counting GPU work needs the webgpu backend, not ${tf.getBackend()}`);
  const backend = tf.backend() as unknown as WebGPUBackendWork;
  const manager = backend.bufferManager;
  const own = {
    run: Object.prototype.hasOwnProperty.call(backend, 'runWebGPUProgram'),
    get: Object.prototype.hasOwnProperty.call(backend, 'getBufferData'),
    acquire: Object.prototype.hasOwnProperty.call(manager, 'acquireBuffer'),
  };
  const run = backend.runWebGPUProgram;
  const get = backend.getBufferData;
  const acquire = manager.acquireBuffer;
  backend.runWebGPUProgram = function (this: WebGPUBackendWork, program: WebGPUProgram, ...rest: unknown[]) {
    hooks.dispatch?.(program.constructor.name);
    return run.call(this, program, ...rest);
  };
  const rawDispatch = (name: string) => hooks.dispatch?.(name);
  rawDispatchListeners.add(rawDispatch);
  backend.getBufferData = function (this: WebGPUBackendWork, buffer: { size: number }) {
    hooks.read?.(buffer.size);
    return get.call(this, buffer);
  };
  manager.acquireBuffer = function (this: WebGPUBackendWork['bufferManager'], size: number, ...rest: unknown[]) {
    const before = this.numBytesAllocated;
    const buffer = acquire.call(this, size, ...rest);
    hooks.acquire?.(size, this.numBytesAllocated !== before);
    return buffer;
  };
  return () => {
    rawDispatchListeners.delete(rawDispatch);
    // Put back exactly what was there: an own property, or the class's method.
    if (own.run) backend.runWebGPUProgram = run;
    else delete (backend as Partial<WebGPUBackendWork>).runWebGPUProgram;
    if (own.get) backend.getBufferData = get;
    else delete (backend as Partial<WebGPUBackendWork>).getBufferData;
    if (own.acquire) manager.acquireBuffer = acquire;
    else delete (manager as Partial<WebGPUBackendWork['bufferManager']>).acquireBuffer;
  };
}

interface EngineKernelRuns {
  runKernelFunc(params: { kernelName?: string }): unknown;
  state: { activeScope: { name: string } | null };
}

/**
 * Calls `enter(name)` before and `exit()` after every kernel the engine runs (a registered kernel
 * by its name, a custom-gradient op by its scope name, as tf.profile names them), until the
 * returned function is called. Kernels a kernel calls on the backend directly are not seen.
 */
export function hookKernelRuns(enter: (name: string) => void, exit: () => void): () => void {
  const engine = tf.engine() as unknown as EngineKernelRuns;
  const own = Object.prototype.hasOwnProperty.call(engine, 'runKernelFunc');
  const original = engine.runKernelFunc;
  engine.runKernelFunc = function (this: EngineKernelRuns, params: { kernelName?: string }) {
    enter(params.kernelName ?? this.state.activeScope?.name ?? 'customOp');
    try {
      return original.call(this, params);
    } finally {
      exit();
    }
  };
  return () => {
    if (own) engine.runKernelFunc = original;
    else delete (engine as Partial<EngineKernelRuns>).runKernelFunc;
  };
}
