// The hand reader of C-STORE-RQ command sets (store-command.ts) gives exactly what dcmjs-dimse's own reader
// gives for the same bytes, or nothing (undefined: the library reads it): commands encoded by the library
// itself, and the shapes other senders produce (padding, move originator, priorities), then the ones it
// must leave to the library.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dimse from 'dcmjs-dimse';
import { asLibraryElements, readStoreCommand } from '../../../src/ingest/dimse/store-command.ts';

const { Dataset, requests } = dimse;
const IMPLICIT = '1.2.840.10008.1.2';

/** What the library makes of a command set: its Dataset's elements (dcmjs-dimse 0.3 _processPDataTf). */
function libraryElements(bytes: Buffer): Record<string, unknown> {
  return new Dataset(Buffer.from(bytes), IMPLICIT).getElements();
}

function element(elementNumber: number, value: Buffer, group = 0x0000): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(group, 0);
  head.writeUInt16LE(elementNumber, 2);
  head.writeUInt32LE(value.length, 4);
  return Buffer.concat([head, value]);
}
const us = (n: number) => Buffer.from([n & 0xff, n >> 8]);
const text = (s: string) => Buffer.from(s, 'latin1');

/** A command set from elements (tag, value), with its group length first. */
function commandSet(parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(body.length, 0);
  return Buffer.concat([element(0x0000, length), body]);
}

function storeCommand(
  opts: {
    sopClass?: Buffer;
    sopInstance?: Buffer;
    field?: number;
    dataSetType?: number;
    priority?: number;
    moveAe?: Buffer;
    moveId?: number;
    extra?: Buffer[];
  } = {},
): Buffer {
  return commandSet([
    element(0x0002, opts.sopClass ?? text('1.2.840.10008.5.1.4.1.1.2\0')),
    element(0x0100, us(opts.field ?? 0x0001)),
    element(0x0110, us(7)),
    element(0x0700, us(opts.priority ?? 0)),
    element(0x0800, us(opts.dataSetType ?? 0x0000)),
    element(0x1000, opts.sopInstance ?? text('1.2.826.0.1.3680043.8.498.1234567\0')),
    ...(opts.moveAe !== undefined ? [element(0x1030, opts.moveAe)] : []),
    ...(opts.moveId !== undefined ? [element(0x1031, us(opts.moveId))] : []),
    ...(opts.extra ?? []),
  ]);
}

test('a command the library encodes reads as the library reads it', () => {
  for (const [uid, priority] of [
    ['1.2.826.0.1.3680043.8.498.12345678901234567890123456789', 0],
    ['1.2.3.4', 1],
    ['2.25.329800735698586629295641978511506172918', 2],
  ] as const) {
    const request = new requests.CStoreRequest(
      new Dataset({ SOPClassUID: '1.2.840.10008.5.1.4.1.1.4', SOPInstanceUID: uid, Rows: 2 }, IMPLICIT),
      priority,
    );
    request.setMessageId(4242);
    const bytes = request.getCommandDataset().getDenaturalizedCommandDataset();
    const ours = readStoreCommand(bytes);
    assert.ok(ours !== undefined, `read ${uid}`);
    assert.deepEqual(asLibraryElements(ours), libraryElements(bytes));
    assert.equal(ours.AffectedSOPInstanceUID, uid);
    assert.equal(ours.MessageID, 4242);
    assert.equal(ours.Priority, priority);
  }
});

test('other senders’ shapes read as the library reads them', () => {
  const shapes: Record<string, Buffer> = {
    'NUL-padded UIDs': storeCommand(),
    'even UIDs, no pad': storeCommand({ sopInstance: text('1.2.826.0.1.3680043.8.498.12345678') }),
    'space-padded UID': storeCommand({ sopInstance: text('1.2.3.45 ') }),
    'move originator': storeCommand({ moveAe: text('ORTHANC '), moveId: 12 }),
    'move originator, padded both sides': storeCommand({ moveAe: text(' PACS_1         ') }),
    'high priority, dataset type 0x0102': storeCommand({ priority: 1, dataSetType: 0x0102 }),
  };
  for (const [name, bytes] of Object.entries(shapes)) {
    const ours = readStoreCommand(bytes);
    assert.ok(ours !== undefined, name);
    assert.deepEqual(asLibraryElements(ours), libraryElements(bytes), name);
  }
});

test('anything but a plain C-STORE-RQ announcing a data set is left to the library', () => {
  const echo = commandSet([
    element(0x0002, text('1.2.840.10008.1.1\0')),
    element(0x0100, us(0x0030)),
    element(0x0110, us(1)),
    element(0x0800, us(0x0101)),
  ]);
  const full = storeCommand();
  const cases: Record<string, Buffer> = {
    'C-ECHO-RQ': echo,
    'C-STORE-RQ without a data set': storeCommand({ dataSetType: 0x0101 }),
    'C-STORE-RSP': storeCommand({ field: 0x8001 }),
    'an element it does not know': storeCommand({ extra: [element(0x4000, text('retired '))] }),
    'a multi-valued UID': storeCommand({ sopInstance: text('1.2.3\\1.2.4') }),
    'an empty UID': storeCommand({ sopInstance: Buffer.alloc(0) }),
    'a US of the wrong length': storeCommand({ extra: [element(0x1031, Buffer.from([1, 0, 0, 0]))] }),
    'elements out of order': Buffer.concat([element(0x0100, us(1)), element(0x0002, text('1.2\0'))]),
    'another group': Buffer.concat([full, element(0x0010, text('x '), 0x0008)]),
    'cut short in a header': full.subarray(0, full.length - 30),
    'cut short in a value': full.subarray(0, full.length - 3),
    'a required element missing': commandSet([element(0x0100, us(1)), element(0x0800, us(0))]),
    empty: Buffer.alloc(0),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    assert.equal(readStoreCommand(bytes), undefined, name);
  }
});
