/**
 * The worker's inference budget shared by its per-model queues: at most `capacity` jobs run at once over
 * all the models it has loaded (config worker.concurrency), the most urgent waiting job (lowest BullMQ
 * priority number, then the earliest) going first when a slot frees. Each model's BullMQ Worker may hold
 * up to `capacity` jobs itself, so one model alone can use the whole budget while the others idle; jobs a
 * Worker holds beyond the free slots wait here, their locks renewed, and run as soon as a slot frees.
 */
export class InferenceSlots {
  private running = 0;
  private seq = 0;
  private readonly waiting: { priority: number; seq: number; start: () => void }[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`capacity must be ≥ 1, got ${capacity}`);
  }

  /** Jobs running now, and jobs held waiting for a slot. */
  get usage(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** Runs `work` in a slot: at once when one is free, else when it is this job's turn. */
  async run<T>(priority: number, work: () => Promise<T>): Promise<T> {
    await this.acquire(priority);
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  private acquire(priority: number): Promise<void> {
    if (this.running < this.capacity && this.waiting.length === 0) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise<void>((start) => {
      const entry = { priority, seq: this.seq++, start };
      // Sorted: lowest priority number first, then first come.
      const at = this.waiting.findIndex(
        (w) => w.priority > entry.priority || (w.priority === entry.priority && w.seq > entry.seq),
      );
      if (at < 0) this.waiting.push(entry);
      else this.waiting.splice(at, 0, entry);
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    // The slot passes straight to the next job: running stays the same.
    if (next) next.start();
    else this.running--;
  }
}
