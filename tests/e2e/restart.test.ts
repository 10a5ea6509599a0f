// Restarting the gateway in the middle of a study loses none of the instances already acknowledged:
// the gateway is killed (SIGKILL, as a crash or power cut) between two halves of a CT series.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  makeModelsDir,
  REDIS_URL,
  SHARED,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../helpers/gateway.ts';
import { readReport } from '../helpers/sr-content.ts';

const SERIES = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
let gateway: GatewayProcess | undefined;

after(async () => {
  await gateway?.dispose();
});

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

test('a gateway killed mid-study, with Redis wiped, keeps every acknowledged instance; the report covers the whole study', async () => {
  const files = readdirSync(SERIES)
    .filter((f) => f.endsWith('.dcm'))
    .map((f) => path.join(SERIES, f));
  assert.equal(files.length, 28);
  // A long quiet period, so the study cannot complete while the gateway is down.
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['uniformity']),
    config: { study: { quietPeriodMs: 4000 } },
  });

  const first = await gateway.store(files.slice(0, 14), { aet: 'CT_SCANNER' });
  assert.equal(first.code, 0, first.stderr);
  await gateway.stop('SIGKILL');
  const spool = path.join(gateway.dataDir, 'spool/studies');
  assert.equal(filesUnder(spool).length, 14, 'every acknowledged instance is on disk after the crash');

  // Redis loses everything too (no persistence configured): the spool alone must bring the study back.
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${gateway.prefix}:*`);
  assert.ok(keys.length > 0);
  await redis.del(...keys);
  redis.disconnect();

  await gateway.start();
  const second = await gateway.store(files.slice(14), { aet: 'CT_SCANNER' });
  assert.equal(second.code, 0, second.stderr);
  assert.equal(filesUnder(spool).length, 28);

  const resultsDir = path.join(gateway.dataDir, 'results');
  // Should the study complete early on a slow machine, a later run supersedes it: wait for the full one.
  const report = await waitFor('an SR covering the whole study in the local results folder', async () => {
    let found: string[];
    try {
      found = filesUnder(resultsDir).filter((f) => f.endsWith('.dcm'));
    } catch {
      return undefined;
    }
    return found
      .map((f) => readReport(readFileSync(f)))
      .find((r) => r.referencedSopInstanceUids.length === 28);
  });
  assert.equal(new Set(report.referencedSopInstanceUids).size, 28, 'the SR references all 28 slices');
  const studies = await gateway.api<{ instanceCount: number; state: string }[]>('/api/studies');
  assert.equal(studies.length, 1);
  assert.equal(studies[0]!.instanceCount, 28);
});
