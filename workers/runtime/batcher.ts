// Per-model micro-batcher: samples from concurrent jobs are stacked along N and run together, which
// is where a GPU gets its throughput. One batch runs at a time per model; samples that arrive while it
// runs form the next batch at once, so a busy model batches itself and an idle one waits at most
// maxWaitMs.

/** Runs `batchSize` samples laid end to end; returns the output tensor's data, batchSize rows of equal length. */
export type BatchRunner = (input: Float32Array, batchSize: number) => Promise<Float32Array>;

export interface BatcherOptions {
  batchLimit: number;
  maxWaitMs: number;
  /** Length of one sample (C × H × W). */
  itemSize: number;
}

interface Pending {
  item: Float32Array;
  resolve: (row: Float32Array) => void;
  reject: (err: unknown) => void;
}

export class MicroBatcher {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly runner: BatchRunner,
    private readonly opts: BatcherOptions,
  ) {
    if (!Number.isInteger(opts.batchLimit) || opts.batchLimit < 1)
      throw new RangeError('batchLimit must be >= 1');
    if (!(opts.maxWaitMs >= 0)) throw new RangeError('maxWaitMs must be >= 0');
  }

  /** Resolves with this sample's row of the output. */
  run(item: Float32Array): Promise<Float32Array> {
    if (item.length !== this.opts.itemSize) {
      return Promise.reject(
        new RangeError(`sample has ${item.length} values, the model takes ${this.opts.itemSize}`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.queue.length >= this.opts.batchLimit) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.opts.maxWaitMs);
    });
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.batchLimit);
    this.running = true;
    void this.execute(batch);
  }

  private async execute(batch: Pending[]): Promise<void> {
    const n = batch.length;
    const size = this.opts.itemSize;
    let output: Float32Array | undefined;
    let failure: unknown;
    try {
      const input = new Float32Array(n * size);
      batch.forEach((p, i) => input.set(p.item, i * size));
      output = await this.runner(input, n);
      if (output.length === 0 || output.length % n !== 0) {
        throw new Error(`model returned ${output.length} values for a batch of ${n}`);
      }
    } catch (err) {
      failure = err;
    }
    this.running = false;
    // Samples that arrived meanwhile go to the runtime before this batch's callers resume, so that
    // their preparing the next samples overlaps that run instead of delaying it.
    if (this.queue.length > 0) this.flush();
    if (failure !== undefined || !output) {
      for (const p of batch) p.reject(failure);
      return;
    }
    const row = output.length / n;
    // Views, not copies: a volume model's row is hundreds of MB.
    batch.forEach((p, i) => p.resolve(output.subarray(i * row, (i + 1) * row)));
  }
}
