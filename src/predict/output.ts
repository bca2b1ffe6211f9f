/**
 * Where `finetune predict` writes its results: stdout, or a file written safely.
 *
 * A file is written as `<file>.partial` while the run goes, record by record, then flushed to disk and
 * renamed to `<file>`: readers of `<file>` never see half a result, and a run that is stopped leaves
 * its finished records in `<file>.partial`, where --resume finds them.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { FinetuneError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { readRecords, type Formatter, type ReadRecord } from './formats.js';

/** The file an unfinished run writes into, beside its --output file. */
export const partialPath = (target: string): string => `${target}.partial`;

/** Text out, with backpressure; `commit()` makes a file output final. */
export interface OutputSink {
  write(text: string): Promise<void>;
  /** Ends the output: a file is flushed to disk and renamed into place. */
  commit(): Promise<void>;
  /** Stops after a failure: the file's records so far stay in its .partial file. */
  abort(): Promise<void>;
}

/** Writes to a stream (stdout); a stream closed by its reader (EPIPE, e.g. `| head`) stops the run with an error. */
export function streamSink(stream: NodeJS.WritableStream): OutputSink {
  let closed: Error | undefined;
  const onError = (error: NodeJS.ErrnoException) => {
    closed = new FinetuneError(
      error.code === 'EPIPE' ? 'stopped: the reader of the output closed it (EPIPE).' : `cannot write the output: ${error.message}`,
      { cause: error },
    );
  };
  stream.on('error', onError);
  const gone = () => closed ?? ((stream as { destroyed?: boolean }).destroyed ? new FinetuneError('stopped: the output was closed.') : undefined);
  return {
    async write(text) {
      const before = gone();
      if (before) throw before;
      if (text === '' || stream.write(text)) return;
      // Backpressure: wait until the reader catches up, or the stream ends.
      await new Promise<void>((resolve) => {
        // The timer also keeps the process alive: a failed pipe write may report its EPIPE only
        // after an event-loop turn that nothing else would wait for.
        const poll = setInterval(() => gone() && done(), 100);
        const done = () => {
          clearInterval(poll);
          stream.off('drain', done);
          stream.off('close', done);
          stream.off('error', done);
          resolve();
        };
        stream.on('drain', done);
        stream.on('close', done);
        stream.on('error', done);
        if (gone()) done();
      });
      const after = gone();
      if (after) throw after;
    },
    async commit() {
      stream.off('error', onError);
    },
    async abort() {
      stream.off('error', onError);
    },
  };
}

/** What opening an output file found. */
export interface OpenedOutput {
  sink: OutputSink;
  /** Keys (files; kaggle: ids) an earlier run labelled: --resume skips them. */
  done: Set<string>;
  /** Records copied over from the earlier output. */
  carried: number;
  /** Error rows of the earlier output, whose files are tried again. */
  retried: number;
}

/**
 * Opens `target` for writing through its .partial file. With `resume`, the labelled records of an
 * earlier `target` and of an interrupted run's .partial are carried over, and their keys returned.
 */
export async function openOutputFile(target: string, formatter: Formatter, options: { resume?: boolean } = {}): Promise<OpenedOutput> {
  const partial = partialPath(target);
  const records = new Map<string, ReadRecord>();
  if (options.resume) {
    for (const file of [target, partial]) {
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      for (const r of readRecords(text, formatter, file)) {
        const seen = records.get(r.key);
        if (seen === undefined || !seen.ok || r.ok) records.set(r.key, r);
      }
    }
  }
  const done = new Set<string>();
  let head = formatter.begin();
  let retried = 0;
  for (const r of records.values()) {
    if (!r.ok) {
      retried++;
      continue;
    }
    done.add(r.key);
    head += formatter.carried(r.text);
  }
  // The carried records reach the disk whole before anything else happens to the .partial file.
  try {
    await writeFileAtomic(partial, head);
  } catch (error) {
    throw new FinetuneError(`cannot write ${partial}: ${(error as Error).message}. Check that its folder exists and is writable.`, { cause: error });
  }
  const handle: FileHandle = await fs.open(partial, 'a');
  let open = true;
  const close = async () => {
    if (open) {
      open = false;
      await handle.close();
    }
  };
  return {
    done,
    carried: done.size,
    retried,
    sink: {
      async write(text) {
        if (text !== '') await handle.write(text);
      },
      async commit() {
        await handle.sync();
        await close();
        await fs.rename(partial, target);
      },
      async abort() {
        await close();
      },
    },
  };
}
