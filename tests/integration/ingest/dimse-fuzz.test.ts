// Bounded, seeded fuzzing of the DIMSE front door: a valid association + C-STORE of a small CR, then random
// byte flips, truncations and insertions, either anywhere in the byte stream (PDU level) or only inside the
// data set with the PDUs rebuilt around it (data set level). Afterwards the server must still serve a normal
// storescu, and no half-written temp file may remain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { seededRandom } from '../../../src/util/seeded-random.ts';
import { part10DatasetOffset, readInstanceHeader } from '../../../src/dicom/part10.ts';
import {
  SAMPLES,
  dcmtk,
  exchange,
  rawStoreSteps,
  startTestDimse,
  storeResponses,
  storeStatus,
  tempFiles,
} from '../../helpers/ingest.ts';

const AE = 'AIGW_TEST';
const SEED = 0x5eed_a16e;
const ITERATIONS = 300;
const TIME_BUDGET_MS = 20_000;
const PARALLEL = 8;
const FILE = path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm');

function mutate(bytes: Buffer, random: () => number): Buffer {
  const out = Buffer.from(bytes);
  const pick = (n: number) => Math.floor(random() * n);
  const kind = pick(4);
  if (kind === 0 || kind === 3) {
    const flips = 1 + pick(8);
    for (let i = 0; i < flips; i++) out[pick(out.length)] = pick(256);
  }
  if (kind === 1 || kind === 3) return out.subarray(0, pick(out.length));
  if (kind === 2) {
    const at = pick(out.length);
    const junk = Buffer.alloc(1 + pick(64));
    for (let i = 0; i < junk.length; i++) junk[i] = pick(256);
    return Buffer.concat([out.subarray(0, at), junk, out.subarray(at)]);
  }
  return out;
}

test('seeded PDU and data set fuzzing never takes the SCP down', { timeout: 120_000 }, async () => {
  const t = await startTestDimse({ limits: { associationTimeoutMs: 2000, idleTimeoutMs: 2000 } });
  try {
    const file = await readFile(FILE);
    const dataset = file.subarray(part10DatasetOffset(file));
    const { sopClassUid, sopInstanceUid } = await readInstanceHeader(FILE);
    assert.ok(sopClassUid !== undefined && sopInstanceUid !== undefined);
    // Without the A-RELEASE-RQ: sent in one go it would overtake the C-STORE response. The session ends when
    // the server closes it or after a short silence.
    const session = (ds: Buffer) =>
      Buffer.concat(rawStoreSteps('FUZZER', AE, sopClassUid, sopInstanceUid, ds).slice(0, -1));
    const valid = session(dataset);
    // The unmutated session works: the fuzzing starts from something the server accepts.
    assert.equal(storeStatus(await exchange(t.server.port, [valid], 500)), 0);

    const random = seededRandom(SEED);
    const started = Date.now();
    const outcomes = { answered: 0, refused: 0, cut: 0 };
    let done = 0;
    const one = async () => {
      const pduLevel = random() < 0.5;
      const bytes = pduLevel ? mutate(valid, random) : session(mutate(dataset, random));
      const status = storeStatus(await exchange(t.server.port, [bytes], 300));
      if (status === undefined) outcomes.cut++;
      else if (status === 0) outcomes.answered++;
      else outcomes.refused++;
    };
    while (done < ITERATIONS && Date.now() - started < TIME_BUDGET_MS) {
      const batch = Math.min(PARALLEL, ITERATIONS - done);
      await Promise.all(Array.from({ length: batch }, one));
      done += batch;
    }
    console.log(`fuzz: ${done} sessions in ${Date.now() - started} ms`, outcomes);
    assert.ok(done >= 50, 'enough sessions ran to mean something');

    const normal = await dcmtk('storescu', ['-v', '-aec', AE, '127.0.0.1', String(t.server.port), FILE]);
    assert.deepEqual(storeResponses(normal.out), ['Success'], normal.out);
    const echo = await dcmtk('echoscu', ['-v', '-aec', AE, '127.0.0.1', String(t.server.port)]);
    assert.match(echo.out, /Echo Response \(Success\)/);
    // Cut-off transfers are cleaned up asynchronously as their sockets close.
    for (let i = 0; i < 100 && (await tempFiles(t.store)).length > 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await tempFiles(t.store), []);
  } finally {
    await t.close();
  }
});
