// Per-model micro-batcher: samples from concurrent jobs are stacked along N and run together, which
// is where a GPU gets its throughput. One batch runs at a time per model. A batch goes as soon as it is
// full, or when the model has been free for maxWaitMs with samples waiting: time spent waiting for a
// busy model does not count, so a partial batch left over after a run still gets its few milliseconds
// to fill up.
//
// Urgent (STAT) samples have a lane of their own: they queue ahead of every routine sample, a batch that
// starts with one holds urgent samples only (routine company would lengthen its run), and it goes at once,
// or as soon as the running batch ends, without waiting for company.

/** Runs `batchSize` samples laid end to end; returns the output tensor's data, batchSize rows of equal length. */
export type BatchRunner = (input: Float32Array, batchSize: number) => Promise<Float32Array>;

export interface BatcherOptions {
  batchLimit: number;
  maxWaitMs: number;
  /** Length of one sample (C × H × W). */
  itemSize: number;
}

/** Largest stacking buffer kept between batches (64 MB of float32). */
const KEPT_BUFFER_MAX_VALUES = 16 * 1024 * 1024;

export interface RunOptions {
  /** A STAT sample: runs ahead of routine ones and never waits for a batch to fill. */
  urgent?: boolean;
}

interface Pending {
  item: Float32Array;
  urgent: boolean;
  resolve: (row: Float32Array) => void;
  reject: (err: unknown) => void;
}

export class MicroBatcher {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Where batches are stacked; reused, since one batch runs at a time and the runtime keeps no reference. */
  private input: Float32Array | undefined;

  constructor(
    private readonly runner: BatchRunner,
    private readonly opts: BatcherOptions,
  ) {
    if (!Number.isInteger(opts.batchLimit) || opts.batchLimit < 1)
      throw new RangeError('batchLimit must be >= 1');
    if (!(opts.maxWaitMs >= 0)) throw new RangeError('maxWaitMs must be >= 0');
  }

  /** Resolves with this sample's row of the output. */
  run(item: Float32Array, options: RunOptions = {}): Promise<Float32Array> {
    if (item.length !== this.opts.itemSize) {
      return Promise.reject(
        new RangeError(`sample has ${item.length} values, the model takes ${this.opts.itemSize}`),
      );
    }
    const urgent = options.urgent === true;
    return new Promise((resolve, reject) => {
      const pending = { item, urgent, resolve, reject };
      if (urgent) {
        // Behind the urgent samples already waiting, ahead of every routine one.
        const at = this.queue.findIndex((p) => !p.urgent);
        if (at === -1) this.queue.push(pending);
        else this.queue.splice(at, 0, pending);
        this.flush(); // at once, or (while a batch runs) as soon as it ends
        return;
      }
      this.queue.push(pending);
      if (this.queue.length >= this.opts.batchLimit) this.flush();
      // While a batch runs, its end starts the wait (a timer set now would be due by then).
      else if (!this.running) this.timer ??= setTimeout(() => this.flush(), this.opts.maxWaitMs);
    });
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.queue.length === 0) return;
    // An urgent batch takes urgent samples only: routine company would make its run longer.
    const firstRoutine = this.queue.findIndex((p) => !p.urgent);
    const take =
      this.queue[0]!.urgent && firstRoutine !== -1
        ? Math.min(firstRoutine, this.opts.batchLimit)
        : this.opts.batchLimit;
    const batch = this.queue.splice(0, take);
    this.running = true;
    void this.execute(batch);
  }

  /**
   * The batch laid end to end. A single sample is passed as it is; a bigger batch is copied into one
   * buffer kept for the batcher's life (a fresh 4.8 MB buffer per batch of 8 chest images costs ~0.5 ms
   * in page faults), unless that buffer would be large (volume models).
   */
  private stack(batch: Pending[]): Float32Array {
    const size = this.opts.itemSize;
    if (batch.length === 1) return batch[0]!.item;
    let input: Float32Array;
    if (this.opts.batchLimit * size <= KEPT_BUFFER_MAX_VALUES) {
      this.input ??= new Float32Array(this.opts.batchLimit * size);
      input = this.input.subarray(0, batch.length * size);
    } else input = new Float32Array(batch.length * size);
    batch.forEach((p, i) => input.set(p.item, i * size));
    return input;
  }

  private async execute(batch: Pending[]): Promise<void> {
    const n = batch.length;
    let output: Float32Array | undefined;
    let failure: unknown;
    try {
      output = await this.runner(this.stack(batch), n);
      if (output.length === 0 || output.length % n !== 0) {
        throw new Error(`model returned ${output.length} values for a batch of ${n}`);
      }
    } catch (err) {
      failure = err;
    }
    this.running = false;
    // A full batch of samples that arrived meanwhile goes to the runtime before this batch's callers
    // resume, so that their preparing the next samples overlaps that run instead of delaying it. A
    // partial one waits for company like any other: running it at once splits the stream into small
    // batches for good (3, 5, 3, 5, … measured in bench/inference), each slower per image than a full one.
    if (this.queue.length >= this.opts.batchLimit || this.queue[0]?.urgent) this.flush();
    else if (this.queue.length > 0) this.timer ??= setTimeout(() => this.flush(), this.opts.maxWaitMs);
    if (failure !== undefined || !output) {
      for (const p of batch) p.reject(failure);
      return;
    }
    const row = output.length / n;
    // Views, not copies: a volume model's row is hundreds of MB.
    batch.forEach((p, i) => p.resolve(output.subarray(i * row, (i + 1) * row)));
  }
}
