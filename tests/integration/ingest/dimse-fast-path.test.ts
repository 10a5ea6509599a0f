// The receive path's promise against real senders (storescu, dcmsend): dcmjs-dimse reads the association
// PDUs, and nothing of a C-STORE, neither its command (store-command.ts) nor its data-set fragments
// (pdata-receiver.ts), while every instance is stored byte for byte. Should a dcmjs-dimse upgrade change the
// internals both paths mimic, they fall back to the library quietly; this test is what notices.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dcmjsDimse from 'dcmjs-dimse';
import { part10DatasetOffset } from '../../../src/dicom/part10.ts';
import { dcmtk, startTestDimse, storedFile, storeResponses, type TestDimse } from '../../helpers/ingest.ts';
import { synthesizeCtSeries } from '../../../bench/ingest/synth.ts';

const AE = 'AIGW_FAST';
const P_DATA_TF = 0x04;

/** The PDU types the library was handed, counted (its _processPdu, wrapped for this test). */
const handed = new Map<number, number>();
let unwrap: (() => void) | undefined;

let senders: string;
let dimse: TestDimse;

before(async () => {
  let proto = dcmjsDimse.Scp.prototype as unknown as Record<string, unknown> | null;
  while (proto !== null && !Object.prototype.hasOwnProperty.call(proto, '_processPdu'))
    proto = Object.getPrototypeOf(proto) as Record<string, unknown> | null;
  assert.ok(proto !== null, 'dcmjs-dimse reads PDUs in _processPdu');
  const owner = proto;
  const original = owner._processPdu as (this: unknown, pdu: Buffer) => Promise<void>;
  owner._processPdu = function (this: unknown, pdu: Buffer) {
    handed.set(pdu[0]!, (handed.get(pdu[0]!) ?? 0) + 1);
    return original.call(this, pdu);
  };
  unwrap = () => (owner._processPdu = original);
  senders = await mkdtemp(path.join(tmpdir(), 'aigw-fast-path-'));
  dimse = await startTestDimse({ aeTitle: AE, maxPduLength: 65536 });
});

after(async () => {
  unwrap?.();
  await dimse?.close();
  if (senders) await rm(senders, { recursive: true, force: true });
});

for (const sender of ['storescu', 'dcmsend'] as const) {
  test(`${sender}: the library reads no C-STORE command or data set; every instance stored intact`, async () => {
    handed.clear();
    const recorded = dimse.stored;
    recorded.length = 0;
    const files = await synthesizeCtSeries({ dir: path.join(senders, sender), instances: 12 });
    const run = await dcmtk(sender, [
      '-v',
      '-aet',
      'FASTTEST',
      '-aec',
      AE,
      '127.0.0.1',
      String(dimse.server.port),
      ...files,
    ]);
    assert.equal(run.code, 0, run.out);
    if (sender === 'storescu') assert.deepEqual(storeResponses(run.out), Array(files.length).fill('Success'));
    assert.equal(recorded.length, files.length);

    // Association request and release only: no P-DATA-TF reached the library.
    assert.equal(handed.get(P_DATA_TF) ?? 0, 0, `P-DATA-TF PDUs the library read: ${handed.get(P_DATA_TF)}`);
    assert.equal(handed.get(0x01), 1, 'the A-ASSOCIATE-RQ');

    // And what the fast paths stored is what was sent (the data set after the file meta group).
    for (const file of files) {
      const sent = await readFile(file);
      const rec = recorded.find((r) => sent.includes(Buffer.from(r.sopInstanceUid, 'latin1')));
      assert.ok(rec !== undefined, `stored ${path.basename(file)}`);
      const got = await readFile(await storedFile(dimse.store, rec));
      assert.ok(
        got.subarray(part10DatasetOffset(got)).equals(sent.subarray(part10DatasetOffset(sent))),
        `${path.basename(file)}: data set byte for byte`,
      );
    }
  });
}
