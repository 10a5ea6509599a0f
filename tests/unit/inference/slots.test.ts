// The worker's shared inference budget: never more than `capacity` jobs run over all its model queues,
// and a freed slot goes to the most urgent waiting job (lowest BullMQ priority), first come within one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InferenceSlots } from '../../../src/inference/runtime/slots.ts';

function latch() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

test('at most capacity jobs run at once; the rest wait and run as slots free', async () => {
  const slots = new InferenceSlots(2);
  let running = 0;
  let peak = 0;
  const gates = Array.from({ length: 5 }, latch);
  const runs = gates.map((g, i) =>
    slots.run(10, async () => {
      running++;
      peak = Math.max(peak, running);
      await g.opened;
      running--;
      return i;
    }),
  );
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(slots.usage, { running: 2, waiting: 3 });
  for (const g of gates) g.open();
  assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3, 4]);
  assert.equal(peak, 2);
  assert.deepEqual(slots.usage, { running: 0, waiting: 0 });
});

test('a freed slot goes to the most urgent waiting job, then first come', async () => {
  const slots = new InferenceSlots(1);
  const order: string[] = [];
  const first = latch();
  const busy = slots.run(10, async () => {
    order.push('busy');
    await first.opened;
  });
  const waiting = [
    ['routine-a', 10],
    ['stat-a', 1],
    ['routine-b', 10],
    ['stat-b', 1],
    ['urgent', 5],
  ].map(([name, priority]) => slots.run(priority as number, async () => void order.push(name as string)));
  first.open();
  await Promise.all([busy, ...waiting]);
  assert.deepEqual(order, ['busy', 'stat-a', 'stat-b', 'urgent', 'routine-a', 'routine-b']);
});

test('a job that throws frees its slot', async () => {
  const slots = new InferenceSlots(1);
  await assert.rejects(
    slots.run(1, async () => Promise.reject(new Error('boom'))),
    /boom/,
  );
  assert.equal(await slots.run(1, async () => 'next'), 'next');
  assert.throws(() => new InferenceSlots(0), /capacity/);
});
