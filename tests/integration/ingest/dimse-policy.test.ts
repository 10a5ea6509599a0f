// Association policy against real dcmtk senders: known peers, promiscuous mode, source addresses, user
// identity, concurrency limits, ARTIM and PDU-size guards, and the association records for the console.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { AssociationRecord } from '../../../src/pipeline/keys.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { ASSOCIATION_HISTORY, recordAssociation } from '../../../src/ingest/front-door.ts';
import {
  SAMPLES,
  associateRq,
  dcmtk,
  startTestDimse,
  storeResponses,
  tempFiles,
} from '../../helpers/ingest.ts';

const AE = 'AIGW_TEST';
const SMALL_CR = path.join(SAMPLES, 'xray', 'cr-cervical-lat-mono1-agfa-16x16.dcm');
const CR_CLASS = '1.2.840.10008.5.1.4.1.1.1';

function echo(port: number, calling: string, extra: string[] = []) {
  return dcmtk('echoscu', ['-v', '-aet', calling, '-aec', AE, ...extra, '127.0.0.1', String(port)]);
}

function store(port: number, calling: string, extra: string[] = []) {
  return dcmtk('storescu', [
    '-v',
    '-aet',
    calling,
    '-aec',
    AE,
    ...extra,
    '127.0.0.1',
    String(port),
    SMALL_CR,
  ]);
}

/** A raw TCP connection that records what the server sends and when it closes. */
function raw(port: number): Promise<{ socket: Socket; received: () => Buffer; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1');
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => Buffer.concat(chunks), closed }));
    socket.once('error', reject);
  });
}

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('zero config is promiscuous; with peers configured, only they may associate', async () => {
  const open = await startTestDimse();
  try {
    assert.match((await echo(open.server.port, 'ANY_NEWCOMER')).out, /Received Echo Response \(Success\)/);
  } finally {
    await open.close();
  }

  const records: AssociationRecord[] = [];
  const t = await startTestDimse({
    peers: [{ aeTitle: 'CT_SCANNER' }, { aeTitle: 'FAR_PACS', host: '10.20.30.40' }],
    onAssociationClosed: (r) => records.push(r),
  });
  try {
    const known = await store(t.server.port, 'CT_SCANNER');
    assert.deepEqual(storeResponses(known.out), ['Success'], known.out);

    const stranger = await store(t.server.port, 'STRANGER');
    assert.deepEqual(storeResponses(stranger.out), []);
    assert.match(stranger.out, /Association Rejected[\s\S]*Calling AE Title Not Recognized/i, stranger.out);

    // FAR_PACS is only itself when it calls from its configured address.
    const spoofed = await echo(t.server.port, 'FAR_PACS');
    assert.match(spoofed.out, /Calling AE Title Not Recognized/i, spoofed.out);

    const wrongCalled = await dcmtk('echoscu', [
      '-v',
      '-aet',
      'CT_SCANNER',
      '-aec',
      'NOT_US',
      '127.0.0.1',
      String(t.server.port),
    ]);
    assert.match(wrongCalled.out, /Called AE Title Not Recognized/i, wrongCalled.out);

    await until(() => records.length === 4, 'four association records');
    const byAe = (ae: string) => records.filter((r) => r.callingAe === ae);
    assert.equal(byAe('CT_SCANNER').find((r) => r.result === 'accepted')?.stored, 1);
    assert.equal(byAe('STRANGER')[0]?.result, 'rejected');
    assert.match(byAe('STRANGER')[0]?.reason ?? '', /not a known peer/);
    assert.equal(byAe('FAR_PACS')[0]?.result, 'rejected');
    assert.equal(t.stored.length, 1);
  } finally {
    await t.close();
  }

  const promiscuous = await startTestDimse({ peers: [{ aeTitle: 'CT_SCANNER' }], promiscuous: true });
  try {
    assert.match((await echo(promiscuous.server.port, 'STRANGER')).out, /Echo Response \(Success\)/);
  } finally {
    await promiscuous.close();
  }
});

test('user identity: required for a peer, checked against the configured passcodes', async () => {
  const t = await startTestDimse({
    peers: [{ aeTitle: 'SECURE_MOD', requireUserIdentity: true }, { aeTitle: 'PLAIN_MOD' }],
    userIdentity: { required: false, users: [{ username: 'modality1', password: 's3cret-passcode' }] },
  });
  try {
    const none = await store(t.server.port, 'SECURE_MOD');
    assert.match(none.out, /Association Rejected/, none.out);
    const wrong = await store(t.server.port, 'SECURE_MOD', ['-usr', 'modality1', '-pwd', 'guess']);
    assert.match(wrong.out, /Association Rejected/, wrong.out);
    const bare = await store(t.server.port, 'SECURE_MOD', ['-usr', 'modality1']);
    assert.match(bare.out, /Association Rejected/, bare.out);
    const right = await store(t.server.port, 'SECURE_MOD', ['-usr', 'modality1', '-pwd', 's3cret-passcode']);
    assert.deepEqual(storeResponses(right.out), ['Success'], right.out);
    // A peer that need not authenticate still may not present wrong credentials.
    assert.deepEqual(storeResponses((await store(t.server.port, 'PLAIN_MOD')).out), ['Success']);
    const plainWrong = await store(t.server.port, 'PLAIN_MOD', ['-usr', 'modality1', '-pwd', 'guess']);
    assert.match(plainWrong.out, /Association Rejected/, plainWrong.out);
    assert.equal(t.stored.length, 2);
  } finally {
    await t.close();
  }
});

test('concurrency limits per peer and overall; a slot frees when its association ends', async () => {
  const t = await startTestDimse({
    peers: [{ aeTitle: 'BUSY_MOD', maxAssociations: 1 }, { aeTitle: 'OTHER_MOD' }],
    limits: { maxAssociations: 2, maxAssociationsPerPeer: 4 },
  });
  try {
    const held = await raw(t.server.port);
    held.socket.write(associateRq('BUSY_MOD', AE, CR_CLASS));
    await until(() => held.received().length > 0, 'A-ASSOCIATE-AC');
    assert.equal(held.received().readUInt8(0), 0x02, 'first association accepted');

    const second = await echo(t.server.port, 'BUSY_MOD');
    assert.match(
      second.out,
      /Association Rejected[\s\S]*(Local Limit Exceeded|local-limit-exceeded)/i,
      second.out,
    );
    assert.match((await echo(t.server.port, 'OTHER_MOD')).out, /Echo Response \(Success\)/);

    const other = await raw(t.server.port);
    other.socket.write(associateRq('OTHER_MOD', AE, CR_CLASS));
    await until(() => other.received().length > 0, 'second A-ASSOCIATE-AC');
    assert.equal(other.received().readUInt8(0), 0x02);
    const full = await echo(t.server.port, 'OTHER_MOD');
    assert.match(full.out, /Association Rejected/i, full.out);

    held.socket.destroy();
    other.socket.destroy();
    await Promise.all([held.closed, other.closed]);
    await until(() => t.server !== undefined, 'noop');
    let again = await echo(t.server.port, 'BUSY_MOD');
    // The server notices the closed sockets asynchronously: retry briefly.
    for (let i = 0; i < 50 && !/Echo Response \(Success\)/.test(again.out); i++) {
      await new Promise((r) => setTimeout(r, 50));
      again = await echo(t.server.port, 'BUSY_MOD');
    }
    assert.match(again.out, /Echo Response \(Success\)/, again.out);
  } finally {
    await t.close();
  }
});

test('silent connections are cut by ARTIM; oversized PDUs are cut before they are buffered', async () => {
  const t = await startTestDimse({ limits: { associationTimeoutMs: 1000 } });
  try {
    const silent = await raw(t.server.port);
    await silent.closed; // would hang (and time the test out) without the association timer
    assert.equal(
      silent.received().length > 0 ? silent.received().readUInt8(0) : 0x07,
      0x07,
      'A-ABORT or nothing',
    );

    const hostile = await raw(t.server.port);
    const header = Buffer.alloc(6);
    header.writeUInt8(0x01, 0);
    header.writeUInt32BE(0x7fffffff, 2); // a 2 GiB A-ASSOCIATE-RQ
    hostile.socket.write(Buffer.concat([header, Buffer.alloc(64 * 1024)]));
    await hostile.closed;

    assert.match((await echo(t.server.port, 'AFTER_ABUSE')).out, /Echo Response \(Success\)/);
    assert.deepEqual(await tempFiles(t.store), []);
  } finally {
    await t.close();
  }
});

test('association records go to Redis newest first, trimmed to the history length', async () => {
  const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
  const prefix = `aigw-test-assoc-${process.pid}-${Date.now()}`;
  try {
    const record = recordAssociation(redis, prefix);
    for (let i = 0; i < ASSOCIATION_HISTORY + 3; i++) {
      record({
        callingAe: `AE${i}`,
        calledAe: AE,
        address: '127.0.0.1',
        startedAt: i,
        durationMs: 1,
        stored: i,
        failed: 0,
        result: 'accepted',
      });
    }
    const key = keys.associations(prefix);
    await until(() => true, 'noop');
    // Pipelined on one connection: a read after the writes sees them all.
    assert.equal(await redis.llen(key), ASSOCIATION_HISTORY);
    const newest = JSON.parse((await redis.lindex(key, 0)) ?? '{}') as AssociationRecord;
    assert.equal(newest.callingAe, `AE${ASSOCIATION_HISTORY + 2}`);
  } finally {
    await redis.del(keys.associations(prefix));
    redis.disconnect();
  }
});
