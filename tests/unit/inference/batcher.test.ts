import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroBatcher, type BatchRunner } from '../../../src/inference/runtime/batcher.ts';

const ITEM = 4;

/** Blocks the event loop for `ms`, as a synchronous CPU session.run does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** A runner that blocks like ORT on CPU and echoes each row's first value, recording batch sizes. */
function blockingRunner(runMs: number, sizes: number[]): BatchRunner {
  return async (input, n) => {
    sizes.push(n);
    busy(runMs);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = input[i * ITEM]!;
    return out;
  };
}

const sample = (v: number) => new Float32Array(ITEM).fill(v);

test('batcher: a steady stream from concurrent jobs runs in full batches, not in leftovers', async () => {
  // Eight jobs, each preparing its next sample for 2 ms (a decode) after its previous result: the
  // pipeline that used to settle into 3, 5, 3, 5 … when leftovers were flushed as soon as a run ended.
  const sizes: number[] = [];
  const batcher = new MicroBatcher(blockingRunner(20, sizes), {
    batchLimit: 8,
    maxWaitMs: 5,
    itemSize: ITEM,
  });
  const results: number[] = [];
  await Promise.all(
    Array.from({ length: 8 }, async (_, job) => {
      for (let k = 0; k < 10; k++) {
        await sleep(job === 0 ? 0 : 2 + (job % 3));
        const value = job * 100 + k;
        const row = await batcher.run(sample(value));
        assert.equal(row[0], value); // each caller gets its own row back
        results.push(value);
      }
    }),
  );
  assert.equal(results.length, 80);
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    80,
  );
  // Every batch is full: the leftovers after a run wait for company instead of going alone.
  assert.deepEqual(sizes, Array(10).fill(8), `batch sizes ${sizes.join(',')}`);
});

test('batcher: a sample queued while a batch runs gets the full wait after that run', async () => {
  const sizes: number[] = [];
  const batcher = new MicroBatcher(blockingRunner(30, sizes), {
    batchLimit: 4,
    maxWaitMs: 10,
    itemSize: ITEM,
  });
  const first = batcher.run(sample(1)); // alone: goes after the wait
  await sleep(15); // the first batch (of one) is now running or done
  // Queued during a run that blocks for longer than maxWaitMs: a timer set now would fire the moment
  // the run ended and send these out one by one. They must instead wait together.
  const rest = [2, 3, 4].map((v) => batcher.run(sample(v)));
  await Promise.all([first, ...rest]);
  assert.deepEqual(sizes, [1, 3]);
});

test('batcher: a partial batch still goes after maxWaitMs; a run failure reaches every caller', async () => {
  const sizes: number[] = [];
  const ok = new MicroBatcher(blockingRunner(1, sizes), { batchLimit: 8, maxWaitMs: 5, itemSize: ITEM });
  const rows = await Promise.all([7, 8].map((v) => ok.run(sample(v))));
  assert.deepEqual(
    rows.map((r) => r[0]),
    [7, 8],
  );
  assert.deepEqual(sizes, [2]);

  let calls = 0;
  const flaky = new MicroBatcher(
    async (input, n) => {
      if (calls++ === 0) throw new Error('session lost');
      return input.subarray(0, n);
    },
    { batchLimit: 2, maxWaitMs: 5, itemSize: 1 },
  );
  const outcomes = await Promise.allSettled([flaky.run(Float32Array.of(1)), flaky.run(Float32Array.of(2))]);
  for (const o of outcomes) {
    assert.equal(o.status, 'rejected');
    assert.match(String((o as PromiseRejectedResult).reason), /session lost/);
  }
  // The next batch runs as usual.
  const next = await Promise.all([flaky.run(Float32Array.of(3)), flaky.run(Float32Array.of(4))]);
  assert.deepEqual(
    next.map((r) => r[0]),
    [3, 4],
  );
});

test('batcher: stacked batches reuse one buffer, and rows never leak between batches', async () => {
  const seen: Float32Array[] = [];
  const batcher = new MicroBatcher(
    async (input, n) => {
      seen.push(input);
      return Float32Array.from({ length: n }, (_, i) => input[i * ITEM]! + input[i * ITEM + ITEM - 1]!);
    },
    { batchLimit: 3, maxWaitMs: 1, itemSize: ITEM },
  );
  const a = await Promise.all([1, 2, 3].map((v) => batcher.run(sample(v))));
  const b = await Promise.all([10, 20].map((v) => batcher.run(sample(v))));
  assert.deepEqual(
    a.map((r) => r[0]),
    [2, 4, 6],
  );
  assert.deepEqual(
    b.map((r) => r[0]),
    [20, 40],
  );
  assert.equal(seen[0]!.buffer, seen[1]!.buffer);
  assert.equal(seen[1]!.length, 2 * ITEM); // the second batch sees only its own two rows
});

test('batcher: a STAT sample runs at once, without waiting for a routine batch to fill', async () => {
  const sizes: number[] = [];
  // A wait long enough that any waiting at all would show.
  const batcher = new MicroBatcher(blockingRunner(1, sizes), {
    batchLimit: 8,
    maxWaitMs: 2000,
    itemSize: ITEM,
  });
  const started = performance.now();
  const row = await batcher.run(sample(7), { urgent: true });
  const waited = performance.now() - started;
  assert.equal(row[0], 7);
  assert.ok(waited < 500, `a STAT sample waited ${waited.toFixed(0)} ms for company`);
  assert.deepEqual(sizes, [1]);

  // A routine sample alone does wait for company (the wait above is the batcher's, not the runner's).
  const routineStart = performance.now();
  await batcher.run(sample(8));
  assert.ok(performance.now() - routineStart >= 1900, 'the routine sample waited for its batch');
});

test('batcher: STAT samples overtake queued routine ones, in a batch of their own, as soon as the running batch ends', async () => {
  const order: number[] = [];
  const sizes: number[] = [];
  const batcher = new MicroBatcher(
    async (input, n) => {
      sizes.push(n);
      busy(30);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        out[i] = input[i * ITEM]!;
        order.push(out[i]!);
      }
      return out;
    },
    { batchLimit: 4, maxWaitMs: 1000, itemSize: ITEM },
  );
  // A full routine batch starts at once; four more routine samples queue behind it, then two STAT ones.
  const first = [1, 2, 3, 4].map((v) => batcher.run(sample(v)));
  const queued = [5, 6, 7].map((v) => batcher.run(sample(v)));
  const stat = [101, 102].map((v) => batcher.run(sample(v), { urgent: true }));
  const started = performance.now();
  await Promise.all(stat);
  const statMs = performance.now() - started;
  await Promise.all([...first, ...queued]);
  // The running batch was not interrupted; the STAT pair ran right after it, alone, before the routine
  // leftovers, which then waited for company as routine samples do.
  assert.deepEqual(order, [1, 2, 3, 4, 101, 102, 5, 6, 7]);
  assert.deepEqual(sizes, [4, 2, 3]);
  assert.ok(statMs < 500, `STAT samples took ${statMs.toFixed(0)} ms`);
});
