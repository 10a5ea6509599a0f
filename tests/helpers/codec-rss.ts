// Child process for the codec-memory test (run with --expose-gc): decodes a large RLE image three times
// with the codec reset on or off, then a small one, and prints the resident set size it ends with and the
// one it had before the large decodes (after a small decode), so that the test compares growth, not the
// size of everything else a process loads.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { codecResetCount, readStoredPixels } from '../../src/imaging/decode.ts';

const [big, small, mode] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !big || !small)
  throw new Error('usage: node --expose-gc --import tsx codec-rss.ts BIG SMALL reset|keep');
/**
 * RSS once garbage is collected and its memory handed back: V8 frees the backing stores of collected
 * ArrayBuffers (a WebAssembly memory's too) on a background thread after the collection, so an RSS read
 * right after gc() can still count them.
 */
const settledRss = async (): Promise<number> => {
  gc();
  await sleep(200);
  gc();
  await sleep(200);
  return process.memoryUsage().rss;
};
const limits = { codecMemoryResetBytes: mode === 'reset' ? 16 * 1024 * 1024 : 1024 * 1024 * 1024 };
const smallBytes = await readFile(small);
const bigBytes = await readFile(big);
await readStoredPixels(smallBytes, limits);
const baseline = await settledRss();
for (let i = 0; i < 3; i++) await readStoredPixels(bigBytes, limits);
await readStoredPixels(smallBytes, limits);
console.log(JSON.stringify({ rss: await settledRss(), baseline, resets: codecResetCount() }));
