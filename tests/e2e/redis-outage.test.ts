// Redis goes away mid-study (SIGKILL, no persistence) and comes back empty, while the gateway keeps running:
// every C-STORE still gets an answer quickly (A700 while Redis is down), STOW-RS answers 503, nothing that
// reached the spool is lost, the index is rebuilt from the spool once Redis is back, and the final report
// covers every instance the sender was told was stored. SIGTERM during an outage ends the process.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  makeModelsDir,
  SHARED,
  sigtermExitMs,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../helpers/gateway.ts';
import { storeResponses } from '../helpers/ingest.ts';
import { startPrivateRedis, type PrivateRedis } from '../helpers/redis-server.ts';
import { readReport } from '../helpers/sr-content.ts';
import { readHeaderSync } from '../helpers/dicom-tools.ts';

const SERIES = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const FILES = readdirSync(SERIES)
  .filter((f) => f.endsWith('.dcm'))
  .sort()
  .map((f) => path.join(SERIES, f));

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

async function setup(): Promise<{ gateway: GatewayProcess; redis: PrivateRedis }> {
  const redis = await startPrivateRedis();
  cleanups.push(() => redis.kill());
  const gateway = await startGateway({
    modelsDir: await makeModelsDir(['uniformity']),
    config: {
      redis: { url: redis.url, prefix: 'outage', autoStart: false },
      study: { quietPeriodMs: 2000 },
    },
  });
  cleanups.push(() => gateway.dispose());
  return { gateway, redis };
}

/** One storescu association per file: its status and how long the answer took. */
async function storeOne(gateway: GatewayProcess, file: string): Promise<{ status: string; ms: number }> {
  const started = Date.now();
  const run = await gateway.store([file], { aet: 'CT_SCANNER', args: ['-v'], timeoutMs: 15_000 });
  const ms = Date.now() - started;
  return { status: storeResponses(`${run.stdout}${run.stderr}`)[0] ?? 'no answer', ms };
}

async function stow(gateway: GatewayProcess, file: string): Promise<{ status: number; ms: number }> {
  const boundary = 'outage-boundary';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
    readFileSync(file),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const started = Date.now();
  try {
    const res = await fetch(`http://127.0.0.1:${gateway.httpPort}/dicomweb/studies`, {
      method: 'POST',
      headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` },
      body: new Uint8Array(body),
      signal: AbortSignal.timeout(15_000),
    });
    await res.arrayBuffer();
    return { status: res.status, ms: Date.now() - started };
  } catch {
    return { status: 0, ms: Date.now() - started };
  }
}

test(
  'Redis killed mid-study and restarted empty: every C-STORE answered fast, the report covers every stored instance',
  { timeout: 120_000 },
  async (t) => {
    assert.equal(FILES.length, 28);
    const { gateway, redis } = await setup();
    const pid = gateway.pid;
    assert.ok(pid !== undefined);
    const succeeded = new Set<string>();
    const sop = (file: string) => readHeaderSync(file).SOPInstanceUID as string;

    const first = await gateway.store(FILES.slice(0, 10), { aet: 'CT_SCANNER', args: ['-v'] });
    assert.deepEqual(
      storeResponses(`${first.stdout}${first.stderr}`),
      Array(10).fill('Success'),
      first.stderr,
    );
    for (const f of FILES.slice(0, 10)) succeeded.add(sop(f));

    await redis.kill();
    for (const file of FILES.slice(10, 14)) {
      const { status, ms } = await storeOne(gateway, file);
      assert.ok(ms < 10_000, `C-STORE during the outage answered after ${ms} ms (${status})`);
      assert.ok(['Success', 'Refused: OutOfResources'].includes(status), `C-STORE answered ${status}`);
      if (status === 'Success') succeeded.add(sop(file));
      t.diagnostic(`C-STORE during the outage: ${status} after ${ms} ms`);
    }
    const stowed = await stow(gateway, FILES[14]!);
    t.diagnostic(`STOW-RS during the outage: ${stowed.status} after ${stowed.ms} ms`);
    assert.equal(stowed.status, 503, `STOW-RS during the outage answered ${stowed.status}`);
    assert.ok(stowed.ms < 5_000, `STOW-RS during the outage answered after ${stowed.ms} ms`);
    // What reached the spool stays there: the spool is the source of truth.
    const spool = path.join(gateway.dataDir, 'spool/studies');
    assert.equal(filesUnder(spool).length, 15);

    await redis.start();
    await waitFor(
      'the gateway to see Redis again',
      async () => {
        const res = await fetch(`http://127.0.0.1:${gateway.httpPort}/readyz`).catch(() => undefined);
        return res?.ok ? true : undefined;
      },
      20_000,
    );
    const rest = await gateway.store(FILES.slice(15), { aet: 'CT_SCANNER', args: ['-v'] });
    assert.deepEqual(storeResponses(`${rest.stdout}${rest.stderr}`), Array(13).fill('Success'), rest.stderr);
    for (const f of FILES.slice(15)) succeeded.add(sop(f));

    const resultsDir = path.join(gateway.dataDir, 'results');
    const report = await waitFor(
      'an SR covering every instance that was answered Success',
      async () =>
        filesUnder(resultsDir)
          .filter((f) => f.endsWith('.dcm'))
          .map((f) => readReport(readFileSync(f)))
          .find((r) => [...succeeded].every((u) => r.referencedSopInstanceUids.includes(u))),
      40_000,
    );
    const all = new Set(FILES.map(sop));
    assert.ok(report.referencedSopInstanceUids.every((u) => all.has(u)));
    assert.equal(gateway.pid, pid, 'the gateway process was never restarted');
  },
);

test('SIGTERM during a Redis outage ends the gateway within 15 s', { timeout: 60_000 }, async (t) => {
  const { gateway, redis } = await setup();
  const ok = await storeOne(gateway, FILES[0]!);
  assert.equal(ok.status, 'Success');
  await redis.kill();
  // A store that meets the outage, then SIGTERM while the queues cannot reach Redis.
  const during = gateway.store([FILES[1]!], { aet: 'CT_SCANNER', timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 500));
  const ms = await sigtermExitMs(gateway, 15_000);
  t.diagnostic(`exited ${ms} ms after SIGTERM`);
  await during;
  assert.ok(ms < 15_000, 'the gateway did not exit within 15 s of SIGTERM');
});
