/**
 * Finding the official ImageNet weight files: in finetune's cache, in Keras's own cache (so files
 * Keras already downloaded are reused), else downloaded once into finetune's cache, like Keras's get_file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, createReadStream } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FinetuneError } from '../errors.js';
import type { ImagenetWeightsFile } from './types.js';

export interface ResolveImagenetOptions {
  /** finetune's home; weights go in `<home>/weights`. Default `$FINETUNE_HOME` or `~/.cache/finetune`. */
  home?: string;
  /** Keras's model cache. Default `$KERAS_HOME/models` or `~/.keras/models`. */
  kerasDir?: string;
  /** Default true; false only looks in the two folders. */
  allowDownload?: boolean;
  onProgress?: (received: number, total: number | undefined) => void;
  /** For tests; default the global fetch. */
  fetchImpl?: typeof fetch;
}

/** `<home>/weights`, where finetune keeps downloaded weights. */
export function weightsCacheDir(home?: string): string {
  return path.join(home ?? process.env.FINETUNE_HOME ?? path.join(os.homedir(), '.cache', 'finetune'), 'weights');
}

function defaultKerasDir(): string {
  return path.join(process.env.KERAS_HOME ?? path.join(os.homedir(), '.keras'), 'models');
}

async function fileDigest(file: string, algorithm: string): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

const isFile = (p: string): Promise<boolean> =>
  fs.stat(p).then(
    (s) => s.isFile(),
    () => false,
  );

/**
 * The local path of `file`: found in the cache or ~/.keras/models, or downloaded into the cache
 * (streamed to a temporary file, checked against the published checksum, then renamed into place).
 */
export async function resolveImagenetWeights(file: ImagenetWeightsFile, options: ResolveImagenetOptions = {}): Promise<string> {
  const cacheDir = weightsCacheDir(options.home);
  const kerasDir = options.kerasDir ?? defaultKerasDir();
  const notes: string[] = [];

  for (const dir of [cacheDir, kerasDir]) {
    const candidate = path.join(dir, file.fileName);
    if (!(await isFile(candidate))) continue;
    if (file.checksum) {
      const digest = await fileDigest(candidate, file.checksum.algorithm);
      if (digest !== file.checksum.hex) {
        // Like Keras: a damaged copy is passed over (and replaced, when it is ours) rather than used.
        notes.push(`${candidate} has ${file.checksum.algorithm} ${digest}, expected ${file.checksum.hex} (damaged copy, not used)`);
        continue;
      }
    }
    return candidate;
  }

  const byHand =
    `Download ${file.url} by hand and put it in ${cacheDir} or ${kerasDir}, ` +
    `or pass --weights <path> to use a weights file you have.` +
    (notes.length ? ` Note: ${notes.join('; ')}.` : '');
  if (options.allowDownload === false) {
    throw new FinetuneError(`the ImageNet weights ${file.fileName} are not in ${cacheDir} or ${kerasDir}, and downloading is off. ${byHand}`);
  }

  await fs.mkdir(cacheDir, { recursive: true });
  const target = path.join(cacheDir, file.fileName);
  const tmp = path.join(cacheDir, `.${file.fileName}.${process.pid}-${randomBytes(4).toString('hex')}.part`);
  try {
    await download(file, tmp, options);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    if (e instanceof FinetuneError) throw e;
    const reason = describeFetchError(e);
    throw new FinetuneError(`cannot get the ImageNet weights ${file.fileName}: downloading ${file.url} failed (${reason}). ${byHand}`, {
      cause: e,
    });
  }
  await fs.rename(tmp, target);
  return target;
}

class HttpError extends Error {}

async function download(file: ImagenetWeightsFile, tmp: string, options: ResolveImagenetOptions): Promise<void> {
  const response = await (options.fetchImpl ?? fetch)(file.url);
  if (!response.ok || !response.body) throw new HttpError(`HTTP ${response.status} ${response.statusText}`.trim());
  const length = Number(response.headers.get('content-length'));
  const total = Number.isFinite(length) && length > 0 ? length : undefined;
  const hash = file.checksum ? createHash(file.checksum.algorithm) : undefined;

  const out = await fs.open(tmp, 'w');
  let received = 0;
  try {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash?.update(value);
      await out.write(value);
      received += value.byteLength;
      options.onProgress?.(received, total);
    }
    await out.sync();
  } finally {
    await out.close();
  }
  if (total !== undefined && received !== total) {
    throw new HttpError(`connection closed after ${received} of ${total} bytes`);
  }
  if (hash && file.checksum) {
    const digest = hash.digest('hex');
    if (digest !== file.checksum.hex) {
      throw new FinetuneError(
        `the download of ${file.fileName} from ${file.url} is damaged: its ${file.checksum.algorithm} is ${digest}, ` +
          `expected ${file.checksum.hex}; the partial file was deleted. Try again, or download it by hand and pass --weights <path>.`,
      );
    }
  }
}

/** fetch() rejects with "fetch failed" and hides the reason (ECONNREFUSED, ENOTFOUND …) in `cause`. */
function describeFetchError(e: unknown): string {
  if (e instanceof HttpError) return e.message;
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  const offline = cause === 'ENOTFOUND' || cause === 'EAI_AGAIN' ? '; are you offline?' : '';
  return `${err.message ?? String(e)}${cause ? `: ${cause}` : ''}${offline}`;
}
