/**
 * Finding the official ImageNet weight files: in finetune's cache, in Keras's own cache (so files
 * Keras already downloaded are reused), else downloaded once into finetune's cache, like Keras's get_file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileDigest } from '../io/digest.js';
import type { Dispatcher } from 'undici';
import { FinetuneError, UsageError } from '../errors.js';
import type { Reporter } from '../reporter.js';
import type { BackboneSpec, ImagenetWeightsFile } from './types.js';

export interface ResolveImagenetOptions {
  /** finetune's home; weights go in `<home>/weights`. Default `$FINETUNE_HOME` or `~/.cache/finetune`. */
  home?: string;
  /** Keras's model cache. Default `$KERAS_HOME/models` or `~/.keras/models`. */
  kerasDir?: string;
  /** Default true; false only looks in the two folders. */
  allowDownload?: boolean;
  onProgress?: (received: number, total: number | undefined) => void;
  /** A download that receives nothing for this long (connecting, waiting, reading) fails. Default 30 s. */
  stallTimeoutMs?: number;
}

/** How long a download may receive nothing before it fails. */
export const DOWNLOAD_STALL_TIMEOUT_MS = 30_000;

/** `<home>/weights`, where finetune keeps downloaded weights. */
export function weightsCacheDir(home?: string): string {
  return path.join(home ?? process.env.FINETUNE_HOME ?? path.join(os.homedir(), '.cache', 'finetune'), 'weights');
}

function defaultKerasDir(): string {
  return path.join(process.env.KERAS_HOME ?? path.join(os.homedir(), '.keras'), 'models');
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

  const route = downloadRoute(new URL(file.url));
  await fs.mkdir(cacheDir, { recursive: true });
  const target = path.join(cacheDir, file.fileName);
  const tmp = path.join(cacheDir, `.${file.fileName}.${process.pid}-${randomBytes(4).toString('hex')}.part`);
  try {
    await download(file, tmp, route, options);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    if (e instanceof FinetuneError) throw e;
    const reason = describeFetchError(e);
    throw new FinetuneError(
      `cannot get the ImageNet weights ${file.fileName}: downloading ${file.url} failed (${reason}; ${route.description}). ${byHand}`,
      { cause: e },
    );
  }
  await fs.rename(tmp, target);
  return target;
}

/** The proxy a request goes through, as the environment names it. */
export interface ProxySetting {
  /** The proxy's URL (credentials included, for the connection). */
  uri: string;
  /** The variable it came from, e.g. HTTPS_PROXY. */
  variable: string;
}

/**
 * The proxy for `url` from the environment, as curl and undici read it: https_proxy / HTTPS_PROXY for
 * https (else the http one), http_proxy / HTTP_PROXY for http, lower case first; none when NO_PROXY
 * matches the host (`*`, a host or domain, optionally with :port). A value without a scheme is http://.
 */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): ProxySetting | undefined {
  if (noProxyMatches(url, env.no_proxy ?? env.NO_PROXY ?? '')) return undefined;
  const variable = proxyVariables(url).find((name) => env[name]);
  if (!variable) return undefined;
  const value = env[variable]!.trim();
  const uri = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  try {
    new URL(uri);
  } catch {
    throw new FinetuneError(`${variable}=${value} is not a proxy address: set it to http://host:port, or unset it.`);
  }
  return { uri, variable };
}

/** The variables that may name a proxy for the URL, in the order they are read. */
function proxyVariables(url: URL): string[] {
  return url.protocol === 'https:' ? ['https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'] : ['http_proxy', 'HTTP_PROXY'];
}

/** True when a NO_PROXY list (comma or space separated) exempts the URL's host. */
function noProxyMatches(url: URL, noProxy: string): boolean {
  const unbracket = (host: string) => host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const host = unbracket(url.hostname);
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  for (const entry of noProxy.split(/[,\s]+/).filter(Boolean)) {
    if (entry === '*') return true;
    const withPort = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(entry);
    if (withPort && Number(withPort[2]) !== port) continue;
    // "example.com", ".example.com" and "*.example.com" all cover example.com and its subdomains.
    const domain = unbracket(withPort ? withPort[1]! : entry).replace(/^\*?\./, '');
    if (host === domain || host.endsWith(`.${domain}`)) return true;
  }
  return false;
}

/** How a download reaches its URL, and those words for messages. */
interface DownloadRoute {
  proxy?: ProxySetting;
  description: string;
}

function downloadRoute(url: URL, env: NodeJS.ProcessEnv = process.env): DownloadRoute {
  const proxy = proxyFor(url, env);
  if (proxy) return { proxy, description: `through the proxy ${withoutCredentials(proxy.uri)} from ${proxy.variable}` };
  const variables = proxyVariables(url).filter((name) => name === name.toUpperCase());
  if (variables.some((name) => env[name] || env[name.toLowerCase()])) return { description: `directly: NO_PROXY covers ${url.hostname}` };
  return { description: `directly: no proxy, set ${variables.join(' or ')} if you need one` };
}

/** A proxy URL fit for messages: user and password hidden. */
function withoutCredentials(uri: string): string {
  const url = new URL(uri);
  if (url.username || url.password) {
    url.username = '***';
    url.password = '';
  }
  return url.href.replace(/\/$/, '');
}

class HttpError extends Error {}

/**
 * Aborts a request that receives nothing for `ms`: connecting, waiting for the response (also for a
 * proxy's tunnel) and between body chunks. `alive()` restarts the clock.
 */
class StallWatchdog {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  stalled = false;

  constructor(private readonly ms: number) {
    this.alive();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  alive(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.stalled = true;
      this.controller.abort(new HttpError(`no data for ${this.ms / 1000} s`));
    }, this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

async function download(file: ImagenetWeightsFile, tmp: string, route: DownloadRoute, options: ResolveImagenetOptions): Promise<void> {
  const stallMs = options.stallTimeoutMs ?? DOWNLOAD_STALL_TIMEOUT_MS;
  const watchdog = new StallWatchdog(stallMs);
  // Loaded here: importing undici costs ~0.15 CPU s that runs with the weights at hand skip.
  const { Agent, ProxyAgent } = await import('undici');
  const dispatcher: Dispatcher = route.proxy ? new ProxyAgent({ uri: route.proxy.uri }) : new Agent();
  try {
    await receive(file, tmp, dispatcher, watchdog, options);
  } catch (e) {
    // The abort surfaces as an AbortError or as "terminated", depending on where it caught the request.
    if (watchdog.stalled) throw new HttpError(`no data for ${stallMs / 1000} s`, { cause: e });
    throw e;
  } finally {
    watchdog.stop();
    // Closes the connection kept alive for another request (none will come).
    await dispatcher.destroy().catch(() => undefined);
  }
}

async function receive(file: ImagenetWeightsFile, tmp: string, dispatcher: Dispatcher, watchdog: StallWatchdog, options: ResolveImagenetOptions): Promise<void> {
  const { fetch } = await import('undici');
  const response = await fetch(file.url, { dispatcher, signal: watchdog.signal });
  watchdog.alive();
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
      watchdog.alive();
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

/**
 * The weights file a run uses: `weights` itself when it is a path, or, for 'imagenet', the official
 * Keras file for the backbone and size (from the cache, ~/.keras/models, or downloaded with
 * progress). Shared by training and `finetune check`.
 */
export async function resolveWeightsFile(
  spec: BackboneSpec,
  options: { alpha: number; imageSize: number; weights: string },
  reporter: Reporter,
): Promise<string> {
  if (options.weights !== 'imagenet') return options.weights;
  const official = spec.imagenetWeights({ alpha: options.alpha, imageSize: options.imageSize });
  if (!official) {
    throw new UsageError(
      `no ImageNet weights are published for ${spec.name} alpha=${options.alpha} image size ${options.imageSize}: ` +
        'choose a published combination, or pass --weights <file> or --weights none.',
    );
  }
  if (official.note) reporter.info(official.note);
  let task: ReturnType<Reporter['task']> | undefined;
  const file = await resolveImagenetWeights(official, {
    onProgress: (received, total) => {
      task ??= reporter.task(`downloading ${official.fileName}`, total ?? 0, 'bytes');
      task.update(received);
    },
  });
  task?.finish(`downloaded ${official.fileName}`);
  return file;
}
