import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Decoded images of one size, by index. Training reads them once per epoch in shuffled order, so a
 * store only needs random access to whole images.
 */
export interface PixelStore {
  readonly length: number;
  /** The bytes of image `i` (size × size × 3, RGB). Do not modify them. */
  get(i: number): Uint8Array;
}

/** Images held in memory. */
export class MemoryPixelStore implements PixelStore {
  constructor(private readonly images: Uint8Array[]) {}

  get length(): number {
    return this.images.length;
  }

  get(i: number): Uint8Array {
    return this.images[i]!;
  }
}

/**
 * Keeps images in memory up to a byte budget and the rest in a temporary file, so a dataset larger
 * than memory still trains: peak memory then grows with the batch, not with the dataset. Reads
 * from the file come from the OS page cache when there is room for it.
 */
export class SpillingPixelStore implements PixelStore {
  private readonly memory: Uint8Array[] = [];
  private spilled = 0;
  private fd: number | undefined;
  private file: string | undefined;
  private readonly memoryCapacity: number;

  constructor(
    readonly bytesPerImage: number,
    budgetBytes: number,
    private readonly spillDir = tmpdir(),
  ) {
    this.memoryCapacity = Math.max(0, Math.floor(budgetBytes / bytesPerImage));
  }

  get length(): number {
    return this.memory.length + this.spilled;
  }

  /** How many images live in the spill file. */
  get spilledCount(): number {
    return this.spilled;
  }

  push(pixels: Uint8Array): void {
    if (pixels.length !== this.bytesPerImage) throw new Error(`expected ${this.bytesPerImage} bytes, got ${pixels.length}`);
    if (this.memory.length < this.memoryCapacity) {
      this.memory.push(pixels);
      return;
    }
    if (this.fd === undefined) {
      this.file = path.join(this.spillDir, `finetune-pixels-${process.pid}-${randomBytes(4).toString('hex')}.bin`);
      this.fd = openSync(this.file, 'w+', 0o600);
    }
    writeSync(this.fd, pixels, 0, pixels.length, this.spilled * this.bytesPerImage);
    this.spilled += 1;
  }

  get(i: number): Uint8Array {
    if (i < this.memory.length) return this.memory[i]!;
    const j = i - this.memory.length;
    if (j < 0 || j >= this.spilled) throw new RangeError(`image ${i} of ${this.length}`);
    const out = new Uint8Array(this.bytesPerImage);
    readSync(this.fd!, out, 0, this.bytesPerImage, j * this.bytesPerImage);
    return out;
  }

  /** Deletes the spill file. The store is empty afterwards. */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    if (this.file) rmSync(this.file, { force: true });
    this.fd = undefined;
    this.file = undefined;
    this.memory.length = 0;
    this.spilled = 0;
  }
}

/** Every image of a store, in order (for statistics such as the dataset mean). */
export function* storeImages(store: PixelStore): Generator<Uint8Array> {
  for (let i = 0; i < store.length; i++) yield store.get(i);
}
