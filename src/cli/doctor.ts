/**
 * `finetune doctor`: every compute backend, whether it can be used here and why not, which one
 * `auto` picks, and a short speed probe of each usable one.
 */
import { DiskCache } from '../cache/disk-cache.js';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { Command, InvalidArgumentError } from 'commander';
import { BACKEND_ORDER, autoOrder, probeBackends, type BackendName, type BackendProbe, type GpuAdapterSummary } from '../engine/backend.js';
import { SPEED_PROBE_DEFAULTS, speedProbes, type SpeedProbeResult } from '../engine/speed-probe.js';
import { UsageError } from '../errors.js';
import { ORT_INSTALL, ORT_PACKAGE, probeOnnxRuntime, type InferenceEngineName } from '../predict/onnx-engine.js';
import { integerArg, numberArg } from './predict.js';

/** yes: `auto` may pick it; if-asked: only `--backend <name>` uses it (a CPU-fallback GPU adapter); no: can't be used. */
export type Usability = 'yes' | 'if-asked' | 'no';

export interface DoctorBackend {
  name: BackendName;
  usable: Usability;
  /** What it is, or why it can't be used (in full). */
  detail: string;
  /** The WebGPU adapter found, if any. */
  adapter?: GpuAdapterSummary;
  /** tensorflow: the device libtensorflow computes on (what it reports, not what its package promises). */
  device?: 'GPU' | 'CPU';
  /** For a missing backend: the npm command that adds it. */
  install?: string;
  /** Whether `auto` picks this one. */
  auto: boolean;
  /** The speed probe's figures, where it ran. */
  speed?: SpeedProbeResult;
  /** Why the speed probe could not run, where it was tried and failed. */
  speedError?: string;
}

export interface DoctorReport {
  /** The backend `finetune --backend auto` uses here. */
  auto: BackendName | null;
  /** The order auto tries them in: BACKEND_ORDER, but TensorFlow on the CPU comes after WebGPU. */
  autoOrder: BackendName[];
  backends: DoctorBackend[];
  /** What `finetune predict` and `evaluate` run the model on with --engine auto, and whether ONNX Runtime is there. */
  predict: {
    engine: InferenceEngineName;
    onnxRuntime: { available: true; version: string } | { available: false; reason: string };
  };
  /** The probe settings, or null with --no-speed. */
  speedProbe: { model: 'MobileNetV2'; alpha: number; imageSize: number; batchSize: number; seconds: number; weights: 'random' } | null;
  system: { node: string; tfjs: string; platform: string; arch: string; cpus: number };
  /** The cache kept between runs (`finetune cache`): where, how full; `error` when it cannot be read. */
  cache: { dir: string; entries: number; bytes: number; maxBytes: number } | { error: string };
}

export interface DoctorOptions {
  /** Run the speed probes (default true). */
  speed?: boolean;
  /** Seconds per backend's speed probe (default 5). */
  seconds?: number;
  /** Backends to speed-probe (default: every usable one). */
  backends?: readonly BackendName[];
  alpha?: number;
  imageSize?: number;
  batchSize?: number;
  /** Called before each speed probe. */
  onProbe?: (backend: BackendName, seconds: number) => void;
}

/** Probes every backend thoroughly (Dawn is loaded even without a GPU device) and measures the usable ones. */
export async function doctor(options: DoctorOptions = {}): Promise<DoctorReport> {
  const seconds = options.seconds ?? SPEED_PROBE_DEFAULTS.seconds;
  const probe = {
    alpha: options.alpha ?? SPEED_PROBE_DEFAULTS.alpha,
    imageSize: options.imageSize ?? SPEED_PROBE_DEFAULTS.imageSize,
    batchSize: options.batchSize ?? SPEED_PROBE_DEFAULTS.batchSize,
  };
  const thorough = await probeBackends({ thorough: true });
  // auto probes as initEngine('auto') does (it skips Dawn where Linux shows no GPU device).
  const asAuto = await probeBackends();
  const backends: DoctorBackend[] = thorough.map((p) => ({
    name: p.name,
    usable: usability(p),
    detail: p.detail,
    ...(p.adapter ? { adapter: p.adapter } : {}),
    ...(p.device ? { device: p.device } : {}),
    ...(p.install ? { install: p.install } : {}),
    auto: false,
  }));

  if (options.speed !== false) {
    const wanted = options.backends ?? BACKEND_ORDER;
    const measure = backends.filter((b) => b.usable !== 'no' && wanted.includes(b.name)).map((b) => b.name);
    const outcomes = await speedProbes(measure, {
      ...probe,
      seconds,
      onStart: (name) => options.onProbe?.(name, seconds),
    });
    for (const outcome of outcomes) {
      const b = backends.find((x) => x.name === outcome.backend)!;
      if ('result' in outcome) {
        b.speed = outcome.result;
      } else {
        b.speedError = outcome.error;
        b.usable = 'no';
        b.detail = `${b.detail}, but it failed to start or run (${outcome.error.split('\n')[0]})`;
      }
    }
  }

  // The first backend auto finds available, in its order, unless it failed to start above (then auto goes on too).
  const order = autoOrder(asAuto.find((p) => p.name === 'tensorflow')?.device);
  const pick = order
    .map((name) => asAuto.find((p) => p.name === name)!)
    .find((p) => p.available && backends.find((b) => b.name === p.name)!.speedError === undefined);
  if (pick) backends.find((b) => b.name === pick.name)!.auto = true;

  const ort = await probeOnnxRuntime();
  // As loadClassifier's auto: ONNX Runtime unless tfjs gets a GPU or native TensorFlow.
  const tfjsOnCpu = pick === undefined || pick.name === 'wasm' || pick.name === 'cpu';
  return {
    auto: pick?.name ?? null,
    autoOrder: order,
    backends,
    predict: {
      engine: ort.available && tfjsOnCpu ? 'onnx' : 'tfjs',
      onnxRuntime: ort.available ? { available: true, version: ort.version } : { available: false, reason: ort.reason },
    },
    speedProbe: options.speed === false ? null : { model: 'MobileNetV2', ...probe, seconds, weights: 'random' },
    system: { node: process.version, tfjs: tf.version.tfjs, platform: process.platform, arch: process.arch, cpus: os.availableParallelism() },
    cache: await cacheSummary(),
  };
}

async function cacheSummary(): Promise<DoctorReport['cache']> {
  try {
    const { dir, entries, bytes, maxBytes } = await new DiskCache().stats();
    return { dir, entries, bytes, maxBytes };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

function usability(p: BackendProbe): Usability {
  if (p.available) return 'yes';
  return p.requestable ? 'if-asked' : 'no';
}

// ---------------------------------------------------------------------------------------------
// Text output

const USABLE_TEXT: Record<Usability, string> = { yes: 'yes', 'if-asked': 'if asked', no: 'no' };
const DETAIL_WIDTH = 60;

function shortDetail(b: DoctorBackend): string {
  if (b.speedError !== undefined) return 'failed to start or run (see below)';
  if (b.install) return 'not installed (see below)';
  if (b.name === 'cpu') return 'plain JavaScript (slowest)';
  if (b.adapter && b.usable !== 'no') return b.adapter.cpuFallback ? `CPU fallback: ${b.adapter.name}` : b.adapter.name;
  return b.detail;
}

function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** "12.1 img/s", "0.94 img/s". */
function rateText(imagesPerSecond: number): string {
  return `${imagesPerSecond >= 10 ? imagesPerSecond.toFixed(1) : imagesPerSecond.toPrecision(2)} img/s`;
}

/** Keras's spelling of alpha: 1.0, 0.35. */
function alphaText(alpha: number): string {
  return Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha);
}

function speedText(b: DoctorBackend): string {
  if (!b.speed) return b.usable === 'no' ? '-' : 'not measured';
  const s = b.speed;
  const parts = [`batch ${s.batchSize}`];
  if (s.firstCallSeconds !== undefined && s.firstCallSeconds >= 1) parts.push(`first call ${s.firstCallSeconds.toFixed(1)} s`);
  return `${rateText(s.imagesPerSecond)} (${parts.join(', ')})`;
}

function rate(b: DoctorBackend | undefined): string {
  return b?.speed ? rateText(b.speed.imagesPerSecond) : '';
}

/** Word-wraps `text` to `width` columns, continuation lines indented by two spaces. */
function wrap(text: string, width: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = `  ${word}`;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines.join('\n');
}

/** The report as a table with notes, for a terminal `width` columns wide (notes are wrapped to it). */
export function formatDoctor(report: DoctorReport, width = 100): string {
  const sys = report.system;
  const lines: string[] = [
    `finetune doctor: node ${sys.node}, tfjs ${sys.tfjs}, ${sys.platform} ${sys.arch}, ${sys.cpus} CPU core${sys.cpus === 1 ? '' : 's'}`,
    '',
  ];
  const probe = report.speedProbe;
  const header = ['backend', 'usable', 'detail'];
  if (probe) header.push(`speed (MobileNetV2-${probe.imageSize} α=${alphaText(probe.alpha)}, forward)`);
  const rows = report.backends.map((b) => {
    const row = [b.name, USABLE_TEXT[b.usable], clip(shortDetail(b), DETAIL_WIDTH)];
    if (probe) row.push(speedText(b));
    return { row, auto: b.auto };
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r.row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  lines.push(line(header));
  for (const r of rows) {
    const cells = r.row.map((c, i) => (r.auto && i === r.row.length - 1 ? c.padEnd(widths[i]!) : c));
    lines.push((line(cells) + (r.auto ? '  ← auto' : '')).trimEnd());
  }

  lines.push('');
  lines.push(
    report.auto
      ? `auto picks ${report.auto}: the first usable backend in the order ${report.autoOrder.join(', ')}` +
          (report.autoOrder[0] === 'tensorflow' ? '' : '; TensorFlow computes on the CPU here, so a GPU through WebGPU comes first') +
          ' (choose another with --backend).'
      : 'auto finds no usable backend: tfjs looks broken; reinstall finetune.',
  );
  lines.push(predictEngineLine(report));
  const byName = (n: BackendName) => report.backends.find((b) => b.name === n);
  for (const b of report.backends) {
    if (b.speedError !== undefined) lines.push(`${b.name}: ${b.speedError.split('\n')[0]}`);
    else if (b.install) lines.push(`${b.name}: not installed; to add it: ${b.install}`);
    else if (b.usable === 'if-asked') {
      const wasm = byName('wasm');
      const faster =
        b.speed && wasm?.speed
          ? wasm.speed.imagesPerSecond > b.speed.imagesPerSecond
            ? `wasm is faster (${rate(wasm)} against ${rate(b)})`
            : `though here it measured faster than wasm (${rate(b)} against ${rate(wasm)})`
          : 'wasm is usually faster';
      lines.push(`${b.name}: usable only when asked for (--backend ${b.name}): ${b.adapter?.name ?? 'the adapter'} is a CPU fallback adapter; ${faster}.`);
    } else if (b.usable === 'no') {
      const advice = b.name === 'webgpu' ? ' (WebGPU needs a GPU with Vulkan, Metal or Direct3D 12 drivers)' : '';
      lines.push(`${b.name}: ${b.detail}${advice}.`);
    } else if (shortDetail(b).length > DETAIL_WIDTH) {
      lines.push(`${b.name}: ${b.detail}`);
    }
  }
  if (probe) {
    const measured = report.backends.filter((b) => b.speed);
    lines.push(
      `speed: ${probe.model} α=${alphaText(probe.alpha)} at ${probe.imageSize} px with random weights, forward passes on random images, ` +
        `about ${probe.seconds} s per backend; batch ${probe.batchSize} where that fitted, else 1 image per call` +
        (measured.some((b) => b.speed!.firstCallSeconds !== undefined) ? '; the first call (compilation, set-up) is not counted' : '') +
        '.',
    );
  } else {
    lines.push('speed: not measured (--no-speed).');
  }
  const cache = report.cache;
  lines.push(
    'error' in cache
      ? `cache: ${cache.error}`
      : `cache: ${cache.dir}: ${cache.entries} entries, ${(cache.bytes / 1024 ** 2).toFixed(1)} of ${(cache.maxBytes / 1024 ** 2).toFixed(0)} MiB (finetune cache --clear empties it)`,
  );
  const table = lines.indexOf('', 2); // the notes start after the table's blank line
  return lines.map((l, i) => (i > table ? wrap(l, width) : l)).join('\n') + '\n';
}

/** One line: whether ONNX Runtime is there and what `finetune predict` runs the model on. */
function predictEngineLine(report: DoctorReport): string {
  const ort = report.predict.onnxRuntime;
  if (!ort.available) {
    return `predict: ONNX Runtime not available (${ort.reason.replace(` (${ORT_INSTALL})`, '')}): predict and evaluate use tfjs on ${report.auto ?? 'no backend'}; \`${ORT_INSTALL}\` makes them faster on the CPU.`;
  }
  return report.predict.engine === 'onnx'
    ? `predict: ONNX Runtime available (${ORT_PACKAGE} ${ort.version}): finetune predict and evaluate run models on it (--engine tfjs: on tfjs ${report.auto ?? ''}).`
    : `predict: ONNX Runtime available (${ORT_PACKAGE} ${ort.version}), but predict and evaluate use tfjs on ${report.auto} (--engine onnx for ONNX Runtime).`;
}

// ---------------------------------------------------------------------------------------------
// Command

interface DoctorFlags {
  speed: boolean;
  json?: boolean;
  seconds: number;
  backends?: BackendName[];
  alpha: number;
  imageSize: number;
  batchSize: number;
}

function backendList(value: string): BackendName[] {
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = names.filter((n) => !(BACKEND_ORDER as readonly string[]).includes(n));
  if (unknown.length > 0 || names.length === 0) {
    throw new InvalidArgumentError(`--backends takes names from ${BACKEND_ORDER.join(', ')}, comma-separated; got '${value}'.`);
  }
  return names as BackendName[];
}

const positiveNumber = (flag: string) => (value: string) => {
  const n = numberArg(flag)(value);
  if (!(n > 0)) throw new InvalidArgumentError(`${flag} needs a number > 0, got '${value}'.`);
  return n;
};

export interface DoctorIo {
  stdout?: NodeJS.WritableStream;
  /** Progress while probing (on a terminal only). Default process.stderr. */
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
}

/** `finetune doctor`: the report on stdout; exit status 0 unless something is broken. */
export function doctorCommand(io: DoctorIo = {}): Command {
  const out = io.stdout ?? process.stdout;
  const err = io.stderr ?? process.stderr;
  return new Command('doctor')
    .summary('show the compute backends, which one auto picks, and how fast each is here')
    .description(
      'List the compute backends (tensorflow, webgpu, wasm, cpu): whether each can be used here and why not, the GPU adapter, ' +
        'which one --backend auto picks, and a short speed probe of each usable one (MobileNetV2 forward passes, random weights). ' +
        'Exit status 0 unless something is broken.',
    )
    .option('--no-speed', 'skip the speed probes (instant)')
    .option('--json', 'print JSON for scripts')
    .option('--seconds <n>', 'time for each backend’s speed probe', positiveNumber('--seconds'), SPEED_PROBE_DEFAULTS.seconds)
    .option('--backends <names>', 'speed-probe only these backends (comma-separated, e.g. wasm,webgpu)', backendList)
    .option('--alpha <a>', 'speed probe: MobileNetV2 width multiplier', positiveNumber('--alpha'), SPEED_PROBE_DEFAULTS.alpha)
    .option('--image-size <px>', 'speed probe: input size in pixels, ≥ 32', integerArg('--image-size', 32), SPEED_PROBE_DEFAULTS.imageSize)
    .option('--batch-size <n>', 'speed probe: images per call', integerArg('--batch-size', 1), SPEED_PROBE_DEFAULTS.batchSize)
    .showHelpAfterError('(run finetune doctor --help for every option)')
    .exitOverride()
    .action(async (flags: DoctorFlags) => {
      if (flags.backends && !flags.speed) throw new UsageError('--backends chooses which backends to speed-probe: drop it or --no-speed.');
      const progress = !flags.json && err.isTTY === true;
      const report = await doctor({
        speed: flags.speed,
        seconds: flags.seconds,
        backends: flags.backends,
        alpha: flags.alpha,
        imageSize: flags.imageSize,
        batchSize: flags.batchSize,
        onProbe: progress ? (name, s) => err.write(`\r\x1b[Kfinetune doctor: measuring ${name} (about ${s} s)…`) : undefined,
      });
      if (progress && report.speedProbe) err.write('\r\x1b[K');
      const columns = (out as { columns?: number }).columns;
      out.write(flags.json ? JSON.stringify(report, null, 2) + '\n' : formatDoctor(report, Math.min(columns ?? 100, 100)));
    });
}
