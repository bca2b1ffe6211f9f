/**
 * Picks and starts the tfjs backend finetune computes on.
 *
 * `auto` takes the first usable of, in order:
 *   tensorflow  native libtensorflow (`@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node`),
 *   webgpu      a real GPU through Dawn (`webgpu` + `@tensorflow/tfjs-backend-webgpu`),
 *   wasm        XNNPACK compiled to WebAssembly with SIMD (always there),
 *   cpu         tfjs' plain-JavaScript kernels (slowest; last resort).
 * WebGPU adapters that are CPU fallbacks (SwiftShader, llvmpipe, …) are skipped in auto mode: WASM
 * beats them. Native TensorFlow that runs on the CPU (tfjs-node, or tfjs-node-gpu without the CUDA
 * it needs, which says nothing about it) comes after a real WebGPU adapter: `tensorflow-device.ts`
 * asks libtensorflow which device it uses. An explicit request that can't be met fails with a
 * FinetuneError saying why and what to do; it never falls back silently.
 *
 * WASM runs on every core by default: tfjs-backend-wasm 4.22 keeps its threaded build off in Node,
 * so `wasm-threads.ts` starts it itself (`EngineOptions.threads`, or FINETUNE_THREADS, to change).
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm'; // importing registers 'wasm'
import { FinetuneError, UsageError } from '../errors.js';
import { checkKernels, installKernels, kernelsMode, type KernelCheckFailure, type KernelsMode } from './kernel-overrides.js';
import { registerMeanGradient } from './mean-gradient.js';
import { defaultWasmThreads, setWasmThreads, wasmThreadsFallback } from './wasm-threads.js';
import { describeTensorflowDevice, tensorflowBackendFacts, type TensorflowPackage } from './tensorflow-device.js';
import { startTensorflowBackend } from './tfjs-internals.js';

export type BackendName = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export type BackendRequest = BackendName | 'auto';

/** Whether a backend can be used here, and why not or what it is. */
export interface BackendProbe {
  name: BackendName;
  available: boolean;
  /** Why not ("no GPU adapter", "not installed (npm install …)") or what it is ("wasm, SIMD, 1 thread"). */
  detail: string;
  /**
   * From `probeBackends` only: whether an explicit request (`--backend <name>`) can use it. True
   * where `available`, and also for a CPU-fallback WebGPU adapter, which `auto` passes over.
   */
  requestable?: boolean;
  /** From `probeBackends` only: the WebGPU adapter Dawn offered, if it was asked. */
  adapter?: GpuAdapterSummary;
  /** tensorflow only, once it has started: the device libtensorflow computes on. */
  device?: 'GPU' | 'CPU';
  /** From `probeBackends` only, where the backend's packages are missing: the command that adds them. */
  install?: string;
}

/** A WebGPU adapter, as `probeBackends` reports it. */
export interface GpuAdapterSummary {
  /** Its description, device or vendor, whichever is there first (e.g. "NVIDIA GeForce RTX 3060"). */
  name: string;
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  /** A software rasteriser (SwiftShader, llvmpipe, …): usable on request, but `auto` skips it. */
  cpuFallback: boolean;
}

export interface ProbeBackendsOptions {
  /**
   * Look at every backend fully, as `finetune doctor` does: load Dawn and ask it for an adapter even
   * where Linux shows no GPU device (`auto` skips that, since Dawn only prints driver warnings there).
   * Default false: probe as `auto` does.
   */
  thorough?: boolean;
}

export interface EngineOptions {
  /**
   * Threads for the wasm backend (default: the FINETUNE_THREADS environment variable, else every
   * core). Fixed once wasm has started: the WebAssembly module lives as long as the process.
   */
  threads?: number;
  /**
   * Whose kernels run where finetune has faster ones (WASM convolution gradients and fast paths,
   * ReLU6's gradient, WebGPU filter gradients): 'finetune' (default; each is checked against tfjs
   * when its backend starts, and falls back to tfjs's with a warning if it disagrees) or 'tfjs'
   * (tfjs's own only). Default: the FINETUNE_KERNELS environment variable, else 'finetune'.
   */
  kernels?: KernelsMode;
}

/** The backend in use. */
export interface EngineInfo {
  backend: BackendName;
  /** What it is, e.g. "wasm, SIMD, 1 thread" or "webgpu on NVIDIA GeForce RTX 3060". */
  detail: string;
  /** The backends looked at to choose it, in order of preference, ending with the chosen one. */
  probes: BackendProbe[];
  /** Whose kernels run (`EngineOptions.kernels`), and finetune's that failed their start-up check and run as tfjs's. */
  kernels: { mode: KernelsMode; failed: KernelCheckFailure[] };
}

/** Preference order for `auto` (but see `autoOrder`: TensorFlow on the CPU comes after WebGPU). */
export const BACKEND_ORDER: readonly BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];

/**
 * The order `auto` tries the backends in, given the device TensorFlow computes on (where it
 * started): `BACKEND_ORDER`, except that TensorFlow on the CPU yields to a GPU through WebGPU
 * (WebGPU's probe in auto mode only offers real GPU adapters).
 */
export function autoOrder(tensorflowDevice: 'GPU' | 'CPU' | undefined): BackendName[] {
  if (tensorflowDevice !== 'CPU') return [...BACKEND_ORDER];
  return ['webgpu', 'tensorflow', ...BACKEND_ORDER.filter((n) => n !== 'webgpu' && n !== 'tensorflow')];
}

const require = createRequire(import.meta.url);

/** A probe plus whether an explicit request may still use it (a CPU-fallback WebGPU adapter). */
interface Probe extends BackendProbe {
  usableIfRequested: boolean;
  /** The detail to report once in use, where it differs from `detail`. */
  inUseDetail?: string;
}

/**
 * Starts the requested backend (`auto`: the best one present) and returns what it is.
 * Idempotent; concurrent calls are serialised.
 */
export function initEngine(request: BackendRequest = 'auto', options: EngineOptions = {}): Promise<EngineInfo> {
  const run = queue.then(() => init(request, options));
  queue = run.catch(() => undefined);
  return run;
}

/**
 * Probes every backend, in `BACKEND_ORDER`, without switching the active one. The first `available`
 * one is what `auto` picks (unless it then fails to initialise). Each probe also says whether an
 * explicit request could use it (`requestable`), the WebGPU adapter found and, for a missing backend,
 * the npm command that adds it.
 */
export async function probeBackends(options: ProbeBackendsOptions = {}): Promise<BackendProbe[]> {
  const mode = options.thorough ? 'explicit' : 'auto';
  const probes: BackendProbe[] = [];
  for (const name of BACKEND_ORDER) {
    const p = await probe(name, mode);
    const report: BackendProbe = { ...publicProbe(p), requestable: p.available || p.usableIfRequested };
    if (p.adapter) report.adapter = { ...p.adapter };
    if (p.install) report.install = p.install;
    if (p.device) report.device = p.device;
    probes.push(report);
  }
  return probes;
}

let queue: Promise<unknown> = Promise.resolve();
let current: { request: BackendRequest; info: EngineInfo } | undefined;

async function init(request: BackendRequest, options: EngineOptions): Promise<EngineInfo> {
  if (request !== 'auto' && !BACKEND_ORDER.includes(request)) {
    throw new UsageError(`Unknown backend '${String(request)}': use auto, ${BACKEND_ORDER.join(', ')}.`);
  }
  const kernels = kernelsMode(options.kernels);
  if (current && tf.getBackend() === current.info.backend && current.info.kernels.mode === kernels) {
    if (current.request === request || current.info.backend === request) return current.info;
  }

  // auto: TensorFlow's probe says which device it computes on, and so where it comes in the order.
  const candidates = request === 'auto' ? autoOrder((await probe('tensorflow', 'auto')).device) : [request];
  const probes: BackendProbe[] = [];
  for (const name of candidates) {
    const p = await probe(name, request === 'auto' ? 'auto' : 'explicit');
    const usable = request === 'auto' ? p.available : p.usableIfRequested;
    const failedKernels = usable ? await activate(name, options, kernels) : undefined;
    if (usable && !failedKernels) {
      p.available = false;
      p.usableIfRequested = false;
      p.detail = `${p.detail}, but it failed to initialise (see the warning above)`;
    } else if (usable) {
      p.available = true;
      p.detail = p.inUseDetail ?? p.detail;
      // Threads are only known once the wasm module is up.
      if (name === 'wasm') p.detail = await wasmDetail();
      probes.push(publicProbe(p));
      const info: EngineInfo = { backend: name, detail: p.detail, probes, kernels: { mode: kernels, failed: failedKernels! } };
      current = { request, info };
      return info;
    }
    probes.push(publicProbe(p));
    if (request !== 'auto') throw new FinetuneError(explain(name, p.detail));
  }
  // Unreachable in practice: the cpu backend is always there.
  throw new FinetuneError(`No tfjs backend could be started: ${probes.map((p) => `${p.name}: ${p.detail}`).join('; ')}.`);
}

/**
 * Starts a backend with finetune's kernels (checked once it runs) or tfjs's. Returns the kernels
 * that failed their check, or undefined if the backend did not start.
 */
async function activate(name: BackendName, options: EngineOptions, kernels: KernelsMode): Promise<KernelCheckFailure[] | undefined> {
  if (name === 'wasm') setWasmThreads(wasmThreads(options));
  // wasm: convolution gradients it lacks, faster Slice, SplitV, Sum, Mean, GatherV2, Identity and
  // Conv2DBackpropInput; webgpu: faster filter gradients; wasm and cpu: ReLU6's gradient.
  installKernels(name, kernels);
  registerMeanGradient(); // every backend: the same values, without a JavaScript array of ones
  if (!(await tf.setBackend(name))) return undefined;
  await tf.ready();
  return kernels === 'finetune' ? checkKernels() : [];
}

/** Threads wanted for wasm: the option, else FINETUNE_THREADS, else every core. */
export function wasmThreads(options: EngineOptions = {}): number {
  if (options.threads !== undefined) return checkThreads(options.threads, 'threads');
  const fromEnv = process.env.FINETUNE_THREADS;
  if (fromEnv !== undefined && fromEnv.trim() !== '') return checkThreads(Number(fromEnv), 'FINETUNE_THREADS');
  return defaultWasmThreads();
}

function checkThreads(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${what} must be a whole number ≥ 1, got ${String(n)}.`);
  return n;
}

function publicProbe(p: Probe): BackendProbe {
  const report: BackendProbe = { name: p.name, available: p.available, detail: p.detail };
  if (p.device) report.device = p.device;
  return report;
}

function explain(name: BackendName, why: string): string {
  const advice: Record<BackendName, string> = {
    tensorflow: why.startsWith('not installed')
      ? 'Or use backend auto.'
      : 'Reinstall it (its postinstall downloads libtensorflow), or use backend auto.',
    webgpu:
      'WebGPU needs a GPU with Vulkan, Metal or Direct3D 12 drivers, and the webgpu and @tensorflow/tfjs-backend-webgpu packages; or use backend auto.',
    wasm: 'This Node.js build has no usable WebAssembly; use backend cpu.',
    cpu: 'Reinstall finetune: @tensorflow/tfjs seems broken.',
  };
  return `The ${name} backend can't be used here: ${why}. ${advice[name]}`;
}

// ---------------------------------------------------------------------------------------------
// Probes. Each is run once per process: they import packages (which register their backend) and
// talk to drivers, and the answers don't change.

const probeCache = new Map<string, Promise<Probe>>();

function probe(name: BackendName, mode: 'auto' | 'explicit'): Promise<Probe> {
  // Only the WebGPU probe differs by mode (auto skips loading Dawn when Linux shows no GPU).
  const key = name === 'webgpu' ? `${name}:${mode}` : name;
  let p = probeCache.get(key);
  if (!p) {
    p = runProbe(name, mode);
    probeCache.set(key, p);
  }
  // Copies: callers annotate them.
  return p.then((r) => ({ ...r }));
}

async function runProbe(name: BackendName, mode: 'auto' | 'explicit'): Promise<Probe> {
  switch (name) {
    case 'tensorflow':
      return probeTensorflow();
    case 'webgpu':
      return probeWebgpu(mode);
    case 'wasm':
      return typeof (globalThis as { WebAssembly?: unknown }).WebAssembly === 'object'
        ? { name, available: true, usableIfRequested: true, detail: await wasmDetail() }
        : { name, available: false, usableIfRequested: false, detail: 'WebAssembly is not available' };
    case 'cpu':
      return { name, available: true, usableIfRequested: true, detail: 'cpu (plain JavaScript, slowest)' };
  }
}

function isInstalled(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

function firstLine(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0]!.trim();
}

/** `import()` of a package TypeScript can't see (optional, maybe absent). */
function importOptional(pkg: string): Promise<unknown> {
  return import(pkg) as Promise<unknown>;
}

async function probeTensorflow(): Promise<Probe> {
  const name = 'tensorflow';
  const failures: string[] = [];
  const packages: readonly TensorflowPackage[] = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];
  for (const pkg of packages) {
    if (!isInstalled(pkg)) continue;
    // libtensorflow's INFO lines (oneDNN, CPU features) are noise here; its warnings (a CUDA library
    // it could not load) say why a GPU goes unused, so they stay.
    process.env.TF_CPP_MIN_LOG_LEVEL ??= '1';
    // TensorFlow takes nearly all GPU memory when it starts, even if auto or doctor then uses WebGPU
    // on the same GPU: let it take what it needs instead.
    process.env.TF_FORCE_GPU_ALLOW_GROWTH ??= 'true';
    const active = tf.getBackend(); // importing tfjs-node switches to it: put that back below
    try {
      await importOptional(pkg); // registers the 'tensorflow' backend
    } catch (e) {
      failures.push(`${pkg} is installed but failed to load (${firstLine(e)})`);
      continue;
    } finally {
      if (active && tf.getBackend() !== active) await tf.setBackend(active);
    }
    if (tf.findBackendFactory(name) == null) {
      failures.push(`${pkg} loaded but registered no tensorflow backend (is its @tensorflow/tfjs version the same as finetune's?)`);
      continue;
    }
    // Starting the backend (without switching to it) is what asks libtensorflow for its devices.
    const backend = startTensorflowBackend();
    if (!backend) {
      failures.push(`${pkg} loaded but its backend failed to start (see the warning above)`);
      continue;
    }
    const { device, detail } = describeTensorflowDevice(tensorflowBackendFacts(backend, pkg));
    return { name, available: true, usableIfRequested: true, detail, device };
  }
  if (failures.length) return { name, available: false, usableIfRequested: false, detail: failures.join('; ') };
  return {
    name,
    available: false,
    usableIfRequested: false,
    detail: 'not installed (npm install @tensorflow/tfjs-node-gpu for an NVIDIA GPU with CUDA, or @tensorflow/tfjs-node)',
    install: 'npm install @tensorflow/tfjs-node-gpu (NVIDIA GPU with CUDA), or npm install @tensorflow/tfjs-node (CPU)',
  };
}

/**
 * The package of a backend `auto` might prefer to WASM (native TensorFlow; WebGPU where a GPU
 * device shows), or undefined: then `auto` surely lands on wasm. Cheap: it loads nothing.
 */
export function fasterBackendInstalled(): string | undefined {
  const tensorflow = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].find(isInstalled);
  if (tensorflow) return tensorflow;
  const gpuDevice = process.platform !== 'linux' || linuxHasGpuDevice();
  return gpuDevice && isInstalled('webgpu') && isInstalled('@tensorflow/tfjs-backend-webgpu') ? 'webgpu' : undefined;
}

/** Linux exposes every GPU a process can use as a device node; none means no GPU at all. */
function linuxHasGpuDevice(): boolean {
  if (existsSync('/dev/dxg')) return true; // WSL2
  try {
    if (readdirSync('/dev/dri').some((f) => f.startsWith('renderD') || f.startsWith('card'))) return true;
  } catch {
    // no /dev/dri
  }
  try {
    return readdirSync('/dev').some((f) => /^nvidia\d+$/.test(f));
  } catch {
    return false;
  }
}

/** The parts of the WebGPU API the probe uses (lib.dom isn't in this project's types). */
interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}
interface DeviceDescriptorLike {
  requiredLimits?: Record<string, number>;
}
interface AdapterLike {
  info?: AdapterInfoLike;
  isFallbackAdapter?: boolean;
  requestAdapterInfo?: () => Promise<AdapterInfoLike>;
  limits: { maxStorageBuffersPerShaderStage: number };
  requestDevice(descriptor?: DeviceDescriptorLike): Promise<unknown>;
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<AdapterLike | null>;
}
interface WebgpuModule {
  create(options: string[]): GpuLike;
  globals: Record<string, unknown>;
}

const CPU_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|software|basic render/i;

async function probeWebgpu(mode: 'auto' | 'explicit'): Promise<Probe> {
  const name = 'webgpu';
  const no = (detail: string): Probe => ({ name, available: false, usableIfRequested: false, detail });
  // Loading Dawn on a machine without a GPU only prints driver warnings to stderr: skip it.
  if (mode === 'auto' && process.platform === 'linux' && !linuxHasGpuDevice()) {
    return no('no GPU adapter (no GPU device in /dev)');
  }
  const missing = ['webgpu', '@tensorflow/tfjs-backend-webgpu'].filter((p) => !isInstalled(p));
  if (missing.length) return { ...no(`not installed (npm install ${missing.join(' ')})`), install: `npm install ${missing.join(' ')}` };

  let gpu: GpuLike;
  let adapter: AdapterLike | null;
  try {
    const webgpu = (await importOptional('webgpu')) as WebgpuModule;
    // The GPU* classes must be globals for tfjs-backend-webgpu.
    for (const [k, v] of Object.entries(webgpu.globals)) {
      if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, writable: true, configurable: true });
    }
    gpu = webgpu.create([]);
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return no(`Dawn (the webgpu package) failed to start (${firstLine(e)})`);
  }
  if (!adapter) {
    return no(process.platform === 'linux' && !linuxHasGpuDevice() ? 'no GPU adapter (no GPU device in /dev)' : 'no GPU adapter');
  }

  const info: AdapterInfoLike = adapter.info ?? (await adapter.requestAdapterInfo?.().catch(() => undefined)) ?? {};
  const adapterName =
    [info.description, info.device, info.vendor].find((s) => typeof s === 'string' && s.length > 0) ?? 'unnamed adapter';
  const cpuFallback =
    adapter.isFallbackAdapter === true ||
    info.isFallbackAdapter === true ||
    CPU_ADAPTER.test([info.vendor, info.architecture, info.device, info.description].join(' '));
  const summary: GpuAdapterSummary = { name: adapterName, cpuFallback };
  for (const k of ['vendor', 'architecture', 'device', 'description'] as const) {
    const v = info[k];
    if (typeof v === 'string' && v.length > 0) summary[k] = v;
  }
  const noWith = (detail: string): Probe => ({ ...no(detail), adapter: summary });

  // tfjs-backend-webgpu registers itself at import time only if navigator.gpu exists.
  setNavigatorGpu(withAllStorageBuffers(gpu));
  try {
    await importOptional('@tensorflow/tfjs-backend-webgpu');
  } catch (e) {
    return noWith(`@tensorflow/tfjs-backend-webgpu failed to load (${firstLine(e)})`);
  }
  if (tf.findBackendFactory(name) == null) return noWith('@tensorflow/tfjs-backend-webgpu registered no backend');

  if (cpuFallback) {
    return {
      name,
      available: false,
      usableIfRequested: true,
      detail: `adapter is a CPU fallback (${adapterName})`,
      inUseDetail: `webgpu on ${adapterName} (a CPU fallback adapter)`,
      adapter: summary,
    };
  }
  return { name, available: true, usableIfRequested: true, detail: `webgpu on ${adapterName}`, adapter: summary };
}

/**
 * `gpu` whose adapters create devices with every storage-buffer binding per shader stage the
 * adapter offers (lavapipe: 16), where tfjs-backend-webgpu asks for WebGPU's default of 8:
 * finetune's shaders that update many tensors in one dispatch (WebGPUAdam) bind that many, and
 * tfjs's Concat takes that many inputs less one per dispatch.
 */
function withAllStorageBuffers(gpu: GpuLike): GpuLike {
  return {
    requestAdapter: async (options) => {
      const adapter = await gpu.requestAdapter(options);
      if (!adapter || !(adapter.limits.maxStorageBuffersPerShaderStage > 8)) return adapter;
      const requestDevice = adapter.requestDevice.bind(adapter);
      const storageBuffers = adapter.limits.maxStorageBuffersPerShaderStage;
      Object.defineProperty(adapter, 'requestDevice', {
        configurable: true,
        value: (descriptor: DeviceDescriptorLike = {}) =>
          requestDevice({ ...descriptor, requiredLimits: { ...descriptor.requiredLimits, maxStorageBuffersPerShaderStage: storageBuffers } }),
      });
      return adapter;
    },
  };
}

function setNavigatorGpu(gpu: GpuLike): void {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator) {
    // Node ≥ 21 has a navigator of its own, without gpu.
    Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
  } else {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
}

async function wasmDetail(): Promise<string> {
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  let threads: number;
  let note = '';
  try {
    threads = getThreadsCount(); // throws until the wasm backend has started
    const fallback = wasmThreadsFallback();
    if (fallback) note = ` (${fallback})`;
  } catch {
    threads = wasmThreads(); // not started yet: what it would start with
  }
  return `wasm, ${simd ? 'SIMD' : 'no SIMD'}, ${threads} thread${threads === 1 ? '' : 's'}${note}`;
}
