import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FinetuneError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { EpochLogs, NamedTensor } from './types.js';

/** Everything besides tensors that a resumed run needs to carry on exactly where it stopped. */
export interface CheckpointState {
  format: 'finetune-checkpoint/1';
  /** The stage and epoch (1-based, within the stage) that completed last. */
  stage: number;
  epoch: number;
  /** True when the stage itself ended (its last epoch ran, or early stopping ended it). */
  stageComplete: boolean;
  /** Learning rate for the next epoch. */
  lr: number;
  history: EpochLogs[];
  /** State of each stateful callback, by its name. */
  callbacks: Record<string, unknown>;
  /** Resolved options and data fingerprint, so a resume with other options or data is refused. */
  run: Record<string, unknown>;
  /** Updates the weight average (`--ema`) had done, when one was saved. */
  emaUpdates?: number;
}

interface StoredTensors {
  file: string;
  specs: tf.io.WeightsManifestEntry[];
  /**
   * The tensors after these, in a file of their own: those that changed since the first file was
   * written (the layers that train), so the rest (the frozen backbone) is not written every epoch.
   */
  rest?: StoredTensors;
}

interface StateFile extends CheckpointState {
  weights: StoredTensors;
  optimizer: StoredTensors;
  /** The best epoch's weights (what early stopping would restore), in `stableWeights(model)` order. */
  best?: StoredTensors;
  /** The weight average (`--ema`) of the stage in progress, in `stableWeights(model)` order. */
  ema?: StoredTensors;
}

/** The checkpoint's commit point: written last, atomically; it names the tensor files that belong to it. */
export const CHECKPOINT_STATE_FILE = 'state.json';

/**
 * Every weight of `model` in an order that does not change when layers are frozen or unfrozen
 * (`model.weights` puts trainable weights first, so its order does).
 */
export function stableWeights(model: tf.LayersModel): tf.LayerVariable[] {
  return model.layers.flatMap((layer) => layer.weights);
}

/**
 * Writes a checkpoint into `dir`: the model's weights (all of them, in `stableWeights(model)` order), the
 * optimizer's slots, and `state`. Crash-safe: the tensor files are named by content and written
 * first; state.json, written last and atomically, is the commit point; older tensor files go after.
 */
export async function saveCheckpoint(
  dir: string,
  model: tf.LayersModel,
  optimizer: { getWeights(): Promise<NamedTensor[]> },
  state: CheckpointState,
  bestWeights?: tf.Tensor[],
  ema?: { values: tf.Tensor[]; updates: number },
): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const variables = stableWeights(model);
  const named = (values: tf.Tensor[]) => values.map((tensor, i) => ({ name: `${i}:${variables[i]!.originalName}`, tensor }));
  const optimizerTensors = await optimizer.getWeights();
  const stateFile: StateFile = {
    ...state,
    weights: await writeTensors(dir, 'weights', named(variables.map((w) => w.read()))),
    optimizer: await writeTensors(dir, 'optimizer', optimizerTensors),
  };
  // getWeights() makes a new tensor for the iteration count; the rest are the optimizer's own.
  optimizerTensors[0]?.tensor.dispose();
  if (bestWeights) stateFile.best = await writeTensors(dir, 'best', named(bestWeights));
  if (ema) {
    stateFile.ema = await writeTensors(dir, 'ema', named(ema.values));
    stateFile.emaUpdates = ema.updates;
  }
  await writeFileAtomic(path.join(dir, CHECKPOINT_STATE_FILE), JSON.stringify(stateFile));
  const keep = new Set(tensorFiles(stateFile));
  for (const name of await fs.readdir(dir)) {
    if (!keep.has(name) && /^(weights|optimizer|best|ema)-[0-9a-f]+\.bin$/.test(name)) await fs.rm(path.join(dir, name), { force: true });
  }
}

/**
 * The file each checkpoint tensor set last started with, and the tensors' data objects in it (a
 * tensor's data never changes; an assignment gives a variable new data). While those tensors still
 * lead the set, that file is kept and only the tensors after them are written (the frozen backbone's
 * weights are not read back, hashed and written every epoch); a set that changed in its first
 * tensors is written anew, split where it first differed from the previous one.
 */
const lastWritten = new Map<string, { data: unknown[]; names: string[]; stored: StoredTensors }>();

async function writeTensors(dir: string, prefix: string, tensors: NamedTensor[]): Promise<StoredTensors> {
  const slot = `${path.resolve(dir)}\0${prefix}`;
  const data = tensors.map((t) => (t.tensor as unknown as { dataId: unknown }).dataId);
  const names = tensors.map((t) => t.name);
  const last = lastWritten.get(slot);
  let same = 0; // how many leading tensors the last first file holds unchanged
  if (last) while (same < last.data.length && same < data.length && last.data[same] === data[same] && last.names[same] === names[same]) same++;
  const lastFileThere = last !== undefined && (await fs.stat(path.join(dir, last.stored.file)).then((st) => st.isFile(), () => false));
  if (last && lastFileThere && same === last.data.length) {
    const { rest: _old, ...first } = last.stored;
    return same === tensors.length ? first : { ...first, rest: await encodeAndWrite(dir, prefix, tensors.slice(same)) };
  }
  // Split where this set first differs from the last one: what lies before stayed the same once, and likely stays.
  const split = same > 0 && same < tensors.length ? same : tensors.length;
  const first = await encodeAndWrite(dir, prefix, tensors.slice(0, split));
  lastWritten.set(slot, { data: data.slice(0, split), names: names.slice(0, split), stored: first });
  return split === tensors.length ? first : { ...first, rest: await encodeAndWrite(dir, prefix, tensors.slice(split)) };
}

/**
 * The files of the checkpoint in `dir`: state.json and the tensor files it names (not leftovers of
 * earlier saves); none when there is no checkpoint.
 */
export async function checkpointFiles(dir: string): Promise<string[]> {
  let stateFile: StateFile;
  try {
    stateFile = JSON.parse(await fs.readFile(path.join(dir, CHECKPOINT_STATE_FILE), 'utf8')) as StateFile;
  } catch {
    return [];
  }
  return [CHECKPOINT_STATE_FILE, ...tensorFiles(stateFile)];
}

/** The tensor files a state file names. */
function tensorFiles(stateFile: StateFile): string[] {
  return [...filesOf(stateFile.weights), ...filesOf(stateFile.optimizer), ...filesOf(stateFile.best), ...filesOf(stateFile.ema)];
}

/** Every file a stored tensor set is in. */
function filesOf(stored: StoredTensors | undefined): string[] {
  return stored ? [stored.file, ...filesOf(stored.rest)] : [];
}

async function encodeAndWrite(dir: string, prefix: string, tensors: NamedTensor[]): Promise<StoredTensors> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  const bytes = new Uint8Array(data as ArrayBuffer);
  const file = `${prefix}-${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.bin`;
  await writeFileAtomic(path.join(dir, file), bytes);
  return { file, specs };
}

/** A checkpoint read back: call `restoreModel` and `optimizerWeights` to use its tensors. */
export interface LoadedCheckpoint {
  state: CheckpointState;
  /** Writes the saved weights into a model built the same way. */
  restoreModel(model: tf.LayersModel): void;
  /** The best epoch's weights in `stableWeights(model)` order, if saved (the caller disposes them). */
  bestWeights(model: tf.LayersModel): tf.Tensor[] | undefined;
  /** The weight average (`--ema`) in `stableWeights(model)` order, if saved (the caller disposes them). */
  emaWeights(model: tf.LayersModel): tf.Tensor[] | undefined;
  /** The optimizer's saved slots, for `optimizer.setWeights` (the caller disposes them). */
  optimizerWeights(): NamedTensor[];
}

/** Reads the checkpoint in `dir`, or undefined when there is none. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint | undefined> {
  let stateFile: StateFile;
  try {
    stateFile = JSON.parse(await fs.readFile(path.join(dir, CHECKPOINT_STATE_FILE), 'utf8')) as StateFile;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FinetuneError(`the checkpoint in ${dir} cannot be read (${(error as Error).message}); start the run again.`);
  }
  if (stateFile.format !== 'finetune-checkpoint/1') {
    throw new FinetuneError(`the checkpoint in ${dir} has format ${String(stateFile.format)}, which this finetune cannot resume.`);
  }
  const readFile = async (file: string) => {
    try {
      return await fs.readFile(path.join(dir, file));
    } catch (error) {
      throw new FinetuneError(`the checkpoint in ${dir} is incomplete: ${file} (${(error as Error).message}); start the run again.`);
    }
  };
  // A set's files (see StoredTensors.rest) hold its tensors in order: one buffer, one list of specs.
  const read = async (stored: StoredTensors) => {
    const parts: Buffer[] = [];
    const specs: tf.io.WeightsManifestEntry[] = [];
    for (let part: StoredTensors | undefined = stored; part; part = part.rest) {
      parts.push(await readFile(part.file));
      specs.push(...part.specs);
    }
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    return { bytes: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer, specs };
  };
  const weights = await read(stateFile.weights);
  const slots = await read(stateFile.optimizer);
  const best = stateFile.best ? await read(stateFile.best) : undefined;
  const ema = stateFile.ema ? await read(stateFile.ema) : undefined;
  const { weights: _w, optimizer: _o, best: _b, ema: _e, ...state } = stateFile;
  const valuesFor = (model: tf.LayersModel, stored: { bytes: ArrayBuffer; specs: tf.io.WeightsManifestEntry[] }) => {
    const decoded = tf.io.decodeWeights(stored.bytes, stored.specs);
    const values = stored.specs.map((spec) => decoded[spec.name]!);
    const expected = stableWeights(model);
    if (values.length !== expected.length || values.some((v, i) => !tf.util.arraysEqual(v.shape, expected[i]!.shape as number[]))) {
      tf.dispose(values);
      throw new FinetuneError('the checkpoint does not fit this model (a different backbone, alpha, size or class count).');
    }
    return values;
  };
  return {
    state,
    restoreModel(model) {
      const values = valuesFor(model, weights);
      stableWeights(model).forEach((variable, i) => variable.write(values[i]!));
      tf.dispose(values);
    },
    bestWeights(model) {
      return best ? valuesFor(model, best) : undefined;
    },
    emaWeights(model) {
      return ema ? valuesFor(model, ema) : undefined;
    },
    optimizerWeights() {
      const decoded = tf.io.decodeWeights(slots.bytes, slots.specs);
      return slots.specs.map((spec) => ({ name: spec.name, tensor: decoded[spec.name]! }));
    },
  };
}
