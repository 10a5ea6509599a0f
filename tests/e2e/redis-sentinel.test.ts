// A gateway configured with Redis Sentinel (one master, one replica, three sentinels on loopback) keeps
// ingesting through a failover: the master is SIGKILLed while 200 instances are being stored one
// association each; every C-STORE is answered within its bound (Success, or A700 while there is no
// master), a refused instance is sent again as a modality would, every instance answered Success is in
// the study index on the new master, and the study's SR in the PACS (Orthanc) references every one of them.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { connectRedis, type RedisTarget } from '../../src/pipeline/redis.ts';
import { StudyIndex } from '../../src/pipeline/study-index.ts';
import { makeModelsDir, startGateway, waitFor } from '../helpers/gateway.ts';
import { storeResponses } from '../helpers/ingest.ts';
import { startOrthanc } from '../helpers/orthanc.ts';
import { readReport } from '../helpers/sr-content.ts';
import { startSentinelSet } from '../helpers/redis-topology.ts';
import { writeSynthetic } from '../helpers/synthetic-dicom.ts';

const COUNT = 200;
const KILL_AFTER = 40;
const STORE_BOUND_MS = 10_000;
/** Images the built-in uniformity model accepts (at least 64 × 64). */
const SIZE = 64;

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

test(
  'through a Sentinel failover mid-ingest, every C-STORE is answered and every Success reaches the report',
  { timeout: 150_000 },
  async (t) => {
    const set = await startSentinelSet('aigw-master');
    cleanups.push(() => set.dispose());
    const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sentinel-files-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const studyUid = `2.25.${BigInt(Date.now()) * 1000n + BigInt(process.pid % 1000)}`;
    const files: { file: string; sop: string }[] = [];
    for (let i = 0; i < COUNT; i++) {
      const sop = `${studyUid}.2.${i + 1}`;
      const file = path.join(dir, `${i}.dcm`);
      await writeSynthetic(
        file,
        {
          SOPInstanceUID: sop,
          StudyInstanceUID: studyUid,
          SeriesInstanceUID: `${studyUid}.1`,
          InstanceNumber: i + 1,
          PatientID: 'SENTINEL',
          Rows: SIZE,
          Columns: SIZE,
          BitsStored: 12,
          HighBit: 11,
          PixelRepresentation: 0,
        },
        new Uint16Array(SIZE * SIZE).map((_, p) => (p * 7 + i) % 4096),
      );
      files.push({ file, sop });
    }

    const target: RedisTarget = {
      url: 'redis://unused.invalid:1',
      sentinels: set.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      name: set.masterName,
    };
    const orthanc = await startOrthanc();
    cleanups.push(() => orthanc.stop());
    const prefix = 'aigw-sentinel';
    const gateway = await startGateway({
      modelsDir: await makeModelsDir(['uniformity']),
      config: {
        redis: { sentinels: target.sentinels, name: target.name, prefix },
        // Longer than any pause of the modality's re-sends, so the study is one run with one report.
        study: { quietPeriodMs: 10_000 },
        destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
        defaultDestination: 'pacs',
        // With a PACS destination only known peers may store.
        dimse: { peers: [{ aeTitle: 'MODALITY1' }] },
      },
    });
    cleanups.push(() => gateway.dispose());

    const succeeded = new Set<string>();
    const statuses = new Map<string, number>();
    let pending = files.slice();
    let sent = 0;
    const deadline = Date.now() + 45_000;
    while (pending.length > 0 && Date.now() < deadline) {
      const refused: typeof pending = [];
      for (const f of pending) {
        if (sent === KILL_AFTER) {
          await set.master.kill();
          t.diagnostic(`master (port ${set.master.port}) SIGKILLed after ${sent} stores`);
        }
        sent++;
        const started = Date.now();
        const run = await gateway.store([f.file], { args: ['-v'], timeoutMs: STORE_BOUND_MS + 5_000 });
        const ms = Date.now() - started;
        const status = storeResponses(`${run.stdout}${run.stderr}`)[0] ?? 'no answer';
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        assert.ok(ms < STORE_BOUND_MS, `C-STORE answered after ${ms} ms (${status})`);
        assert.ok(['Success', 'Refused: OutOfResources'].includes(status), `C-STORE answered ${status}`);
        if (status === 'Success') succeeded.add(f.sop);
        else {
          refused.push(f);
          // A modality waits a moment before sending a refused instance again.
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      pending = refused;
    }
    t.diagnostic(`C-STORE answers: ${JSON.stringify(Object.fromEntries(statuses))}, ${sent} associations`);
    assert.equal(succeeded.size, COUNT, `${COUNT - succeeded.size} instances never stored within 45 s`);

    // The sentinels moved the master to the replica.
    assert.equal(await set.currentMasterPort(), set.replica.port, 'the replica was promoted');
    const redis = connectRedis(target, { maxRetriesPerRequest: 3 });
    cleanups.push(async () => redis.disconnect());
    const index = new StudyIndex(redis, prefix);
    const indexed = await waitFor(
      'every stored instance in the index on the new master',
      async () => {
        const got = new Set((await index.instances(studyUid)).map((r) => r.sopInstanceUid));
        return [...succeeded].every((u) => got.has(u)) ? got : undefined;
      },
      20_000,
    );
    assert.equal(indexed.size, COUNT);
    const ready = await fetch(`http://127.0.0.1:${gateway.httpPort}/readyz`);
    assert.equal(ready.status, 200, 'the gateway is ready on the new master');

    // ...and reaches the report: the study's SR in the PACS references every instance answered Success.
    const srIds = await waitFor(
      'the study SR in Orthanc',
      async () => {
        const res = await orthanc.rest('/tools/find', {
          method: 'POST',
          body: JSON.stringify({ Level: 'Instance', Query: { StudyInstanceUID: studyUid, Modality: 'SR' } }),
        });
        const ids = res.ok ? ((await res.json()) as string[]) : [];
        return ids.length > 0 ? ids : undefined;
      },
      60_000,
    );
    assert.equal(srIds.length, 1, `one SR for the study, not ${srIds.length}`);
    const sr = readReport(
      Buffer.from(await (await orthanc.rest(`/instances/${srIds[0]}/file`)).arrayBuffer()),
    );
    const referenced = new Set(sr.referencedSopInstanceUids);
    const missing = [...succeeded].filter((u) => !referenced.has(u));
    assert.deepEqual(missing, [], `${missing.length} instances answered Success are not in the SR`);
    assert.equal(referenced.size, COUNT);
  },
);
