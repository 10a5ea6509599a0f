// Credential lookups must take as long for an unknown user name as for a known one, or their timing tells
// an attacker which names exist. A configured password of 8 MiB makes one comparison cost milliseconds,
// so an early exit on an unknown name (no comparison at all) shows up far above any noise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import dimse from 'dcmjs-dimse';
import { authenticate } from '../../../src/admin/auth.ts';
import { AssociationPolicy } from '../../../src/ingest/dimse/association-policy.ts';
import { authorize } from '../../../src/ingest/stowrs/auth.ts';

const HUGE = 'p'.repeat(8 * 1024 * 1024);
const RUNS = 7;

function median(fn: () => unknown): number {
  const times: number[] = [];
  fn(); // warm-up
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)]!;
}

/** The unknown name must cost at least half of what a known name with a wrong password costs. */
function assertSameCost(what: string, known: () => unknown, unknown: () => unknown): void {
  const k = median(known);
  const u = median(unknown);
  assert.ok(k > 1, `${what}: the known-name path should hash the 8 MiB password (${k.toFixed(3)} ms)`);
  assert.ok(u >= k / 2, `${what}: unknown name ${u.toFixed(3)} ms vs known name ${k.toFixed(3)} ms`);
}

const basicHeader = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

test('admin basic auth: an unknown user costs as much as a known one', () => {
  const auth = { basic: [{ user: 'nurse', password: HUGE, role: 'read' as const }], bearer: [] };
  assert.equal(authenticate(auth, basicHeader('nurse', 'wrong-password')), undefined);
  assertSameCost(
    'admin',
    () => authenticate(auth, basicHeader('nurse', 'wrong-password')),
    () => authenticate(auth, basicHeader('stranger', 'wrong-password')),
  );
});

test('STOW-RS basic auth: an unknown user costs as much as a known one', () => {
  const auth = { basic: [{ username: 'modality', password: HUGE }], bearer: [] };
  const req = (header: string) =>
    ({ headers: { authorization: header }, socket: { remoteAddress: '192.0.2.1' } }) as IncomingMessage;
  assert.equal(authorize(req(basicHeader('modality', 'wrong')), auth).ok, false);
  assertSameCost(
    'stowrs',
    () => authorize(req(basicHeader('modality', 'wrong')), auth),
    () => authorize(req(basicHeader('stranger', 'wrong')), auth),
  );
});

test('DIMSE user identity: an unknown user costs as much as a known one', () => {
  const policy = new AssociationPolicy({
    aeTitle: 'AIGW',
    peers: [],
    promiscuous: true,
    maxAssociations: 10,
    maxAssociationsPerPeer: 10,
    userIdentity: { required: true, users: [{ username: 'modality', password: HUGE }] },
  });
  const ask = (primary: string) =>
    policy.decide({
      calledAe: 'AIGW',
      callingAe: 'CT1',
      address: '127.0.0.1',
      identity: {
        type: dimse.constants.UserIdentityType.UsernameAndPasscode,
        primary,
        secondary: 'wrong',
        positiveResponseRequested: false,
      },
    });
  assert.equal(ask('modality').accept, false);
  assertSameCost(
    'dimse',
    () => ask('modality'),
    () => ask('stranger'),
  );
});
