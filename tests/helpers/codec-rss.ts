// Child process for the codec-memory test (run with --expose-gc): decodes a large RLE image three times
// with the codec reset on or off, then a small one, and prints the resident set size it ends with.
import { readFile } from 'node:fs/promises';
import { codecResetCount, readStoredPixels } from '../../src/imaging/decode.ts';

const [big, small, mode] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !big || !small)
  throw new Error('usage: node --expose-gc --import tsx codec-rss.ts BIG SMALL reset|keep');
const limits = { codecMemoryResetBytes: mode === 'reset' ? 16 * 1024 * 1024 : 1024 * 1024 * 1024 };
const smallBytes = await readFile(small);
await readStoredPixels(smallBytes, limits);
const bigBytes = await readFile(big);
for (let i = 0; i < 3; i++) await readStoredPixels(bigBytes, limits);
await readStoredPixels(smallBytes, limits);
gc();
gc();
console.log(JSON.stringify({ rss: process.memoryUsage().rss, resets: codecResetCount() }));
