import { Worker } from 'node:worker_threads';

// Worker threads run TypeScript modules as the main thread does: under tsx when the parent runs from
// source (the parent resolves tsx, so the thread needs no loader flags), plain ESM when built.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  await import(workerData.entry);
})().catch((err) => { console.error(err); process.exit(1); });
`;

/** The URL of a thread module next to `parentUrl` (`name` without extension), .ts or .js as the parent. */
export function siblingModule(name: string, parentUrl: string): string {
  return new URL(`./${name}${parentUrl.endsWith('.ts') ? '.ts' : '.js'}`, parentUrl).href;
}

/** Starts a worker thread on `entry` (a module URL) with `data` as its workerData (plus entry and tsx). */
export function startModuleThread(entry: string, data: Record<string, unknown>): Worker {
  const tsx = entry.endsWith('.ts') ? import.meta.resolve('tsx/esm/api') : undefined;
  return new Worker(BOOTSTRAP, { eval: true, workerData: { ...data, entry, tsx }, execArgv: [] });
}
