/**
 * Which device native TensorFlow (`@tensorflow/tfjs-node-gpu` or `@tensorflow/tfjs-node`) really
 * computes on. tfjs-node-gpu falls back to the CPU without a word when the CUDA and cuDNN its
 * libtensorflow was built for are missing (it only logs which library failed to load), so the
 * package name says nothing: tfjs-node's backend asks libtensorflow for its devices when it starts
 * (`isUsingGpuDevice`), and that is what finetune reports and what `auto` decides on.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

export type TensorflowPackage = '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node';

/** The fields of tfjs-node's NodeJSKernelBackend that tell its device (not in tfjs' types). */
export interface TensorflowBackendLike {
  isUsingGpuDevice?: unknown;
  binding?: { TF_Version?: unknown };
}

/** What is known about TensorFlow's device once its backend has started. */
export interface TensorflowDeviceFacts {
  pkg: TensorflowPackage;
  /** libtensorflow found a GPU device and computes on it (the binding's `isUsingGpuDevice`). */
  usingGpu: boolean;
  /** libtensorflow's version (`TF_Version()`), e.g. "2.9.1". */
  tfVersion?: string;
  /** The NVIDIA GPUs the driver shows, by name ([] where there is no NVIDIA driver). */
  nvidiaGpus: string[];
  /** CUDA_VISIBLE_DEVICES, where set. */
  cudaVisibleDevices?: string;
}

export interface TensorflowDevice {
  device: 'GPU' | 'CPU';
  /** "GPU: NVIDIA H200", or "CPU: …" with why not a GPU. */
  summary: string;
  /** The detail finetune reports: "tensorflow (GPU: NVIDIA H200; libtensorflow 2.9.1, tfjs-node-gpu)". */
  detail: string;
}

/** Reads what a started tfjs-node backend says about its device. */
export function tensorflowBackendFacts(backend: TensorflowBackendLike, pkg: TensorflowPackage): TensorflowDeviceFacts {
  const version = backend.binding?.TF_Version;
  const facts: TensorflowDeviceFacts = { pkg, usingGpu: backend.isUsingGpuDevice === true, nvidiaGpus: nvidiaGpuNames() };
  if (typeof version === 'string' && version.length > 0) facts.tfVersion = version;
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined) facts.cudaVisibleDevices = visible;
  return facts;
}

/** The device TensorFlow uses, and in words why it is not a GPU where it isn't. */
export function describeTensorflowDevice(facts: TensorflowDeviceFacts): TensorflowDevice {
  const names = unique(facts.nvidiaGpus);
  const summary = facts.usingGpu ? `GPU: ${gpuText(names)}` : `CPU: ${whyCpu(facts, names)}`;
  const pkg = facts.pkg.replace('@tensorflow/', '');
  const lib = facts.tfVersion ? `libtensorflow ${facts.tfVersion}, ${pkg}` : pkg;
  return { device: facts.usingGpu ? 'GPU' : 'CPU', summary, detail: `tensorflow (${summary}; ${lib})` };
}

function gpuText(names: string[]): string {
  if (names.length === 0) return 'a CUDA device';
  if (names.length === 1) return names[0]!;
  return `one of ${names.join(', ')}`;
}

function whyCpu(facts: TensorflowDeviceFacts, names: string[]): string {
  const here = names.join(', ');
  if (facts.pkg === '@tensorflow/tfjs-node') {
    return names.length > 0
      ? `tfjs-node is TensorFlow's CPU build; @tensorflow/tfjs-node-gpu (with its CUDA and cuDNN) could use the ${here}`
      : "tfjs-node is TensorFlow's CPU build";
  }
  if (names.length === 0) return 'no CUDA GPU visible (no NVIDIA GPU or driver found on this machine)';
  if (facts.cudaVisibleDevices !== undefined && /^\s*(-1)?\s*$/.test(facts.cudaVisibleDevices)) {
    return `no CUDA GPU visible (CUDA_VISIBLE_DEVICES=${facts.cudaVisibleDevices} hides the ${here})`;
  }
  return (
    `no CUDA GPU visible to TensorFlow, though the driver shows the ${here}: ` +
    `libtensorflow${facts.tfVersion ? ` ${facts.tfVersion}` : ''} needs ${cudaNeeds(facts.tfVersion)} on the library path ` +
    "(TensorFlow's warnings above name the library it could not load)"
  );
}

/** What tfjs-node-gpu's libtensorflow needs to reach a GPU (TensorFlow's tested build configurations). */
function cudaNeeds(tfVersion: string | undefined): string {
  if (tfVersion?.startsWith('2.9.')) return 'CUDA 11.2 and cuDNN 8.1 (libcudart.so.11.0, libcudnn.so.8)';
  return 'the CUDA and cuDNN versions it was built for';
}

function unique(names: string[]): string[] {
  return [...new Set(names.map((n) => n.trim()).filter((n) => n.length > 0))];
}

/**
 * The NVIDIA GPUs the driver shows: /proc/driver/nvidia/gpus/<bus>/information on Linux, else
 * nvidia-smi (WSL2, where /proc has no nvidia folder). [] where neither answers.
 */
export function nvidiaGpuNames(): string[] {
  const proc = '/proc/driver/nvidia/gpus';
  try {
    const names = readdirSync(proc)
      .sort()
      .map((bus) => /^Model:\s*(.+)$/m.exec(readFileSync(path.join(proc, bus, 'information'), 'utf8'))?.[1]?.trim())
      .filter((n): n is string => n !== undefined && n.length > 0);
    if (names.length > 0) return names;
  } catch {
    // no NVIDIA kernel driver here
  }
  if (process.platform === 'darwin') return [];
  const smi = spawnSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8', timeout: 5000 });
  if (smi.status !== 0 || typeof smi.stdout !== 'string') return [];
  return smi.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}
