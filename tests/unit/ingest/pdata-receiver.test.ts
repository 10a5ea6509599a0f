// The P-DATA receiver in front of dcmjs-dimse: whatever the socket's chunking, the C-STORE data set reaches
// its stream byte for byte and in order, the library gets every other PDU whole and in order (P-DATA PDUs
// holding only the PDVs that went the slow way), unknown PDU types go to the library's own accumulator, and
// broken PDV framing stops the receiver.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { CORK_BYTES, PDataReceiver, type PDataHost } from '../../../src/ingest/dimse/pdata-receiver.ts';

function pdu(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(6);
  h[0] = type;
  h.writeUInt32BE(body.length, 2);
  return Buffer.concat([h, body]);
}

function pdv(control: number, value: Buffer, contextId = 1): Buffer {
  const h = Buffer.alloc(6);
  h.writeUInt32BE(value.length + 2, 0);
  h[4] = contextId;
  h[5] = control;
  return Buffer.concat([h, value]);
}

interface ParsedPdv {
  control: number;
  value: Buffer;
}

function parsePData(p: Buffer): ParsedPdv[] {
  assert.equal(p[0], 0x04);
  assert.equal(p.readUInt32BE(2), p.length - 6, 'PDU length field matches its body');
  const out: ParsedPdv[] = [];
  let pos = 6;
  while (pos < p.length) {
    const len = p.readUInt32BE(pos);
    out.push({ control: p[pos + 5]!, value: Buffer.from(p.subarray(pos + 6, pos + 4 + len)) });
    pos += 4 + len;
  }
  return out;
}

/**
 * A stand-in for the library's receive state, as far as the receiver depends on it: a command PDV (last)
 * opens a C-STORE; its first data-set PDV opens the store stream; the last one closes it. It records what
 * it was handed, and asserts it never sees a data-set fragment out of order.
 */
class FakeLibrary implements PDataHost {
  handed: Buffer[] = [];
  fallbackBytes: Buffer[] = [];
  stored: Buffer[] = [];
  malformedReasons: string[] = [];
  private cstore = false;
  private stream: Buffer[] | undefined;

  storeStream() {
    const s = this.stream;
    return this.cstore && s !== undefined
      ? {
          write: (chunk: Buffer) => {
            // The receiver hands views of the socket chunk: copy as a file write would have consumed it.
            s.push(Buffer.from(chunk));
            return true;
          },
        }
      : undefined;
  }

  async toLibrary(p: Buffer): Promise<void> {
    this.handed.push(Buffer.from(p));
    // The library is asynchronous: the receiver must wait for it before reading on.
    await new Promise((r) => setImmediate(r));
    if (p[0] !== 0x04) return;
    for (const { control, value } of parsePData(p)) {
      if (control & 0x01) {
        if (control & 0x02) this.cstore = true;
        continue;
      }
      assert.ok(this.cstore, 'data-set fragment without a command');
      this.stream ??= [];
      this.stream.push(value);
      if (control & 0x02) {
        this.stored.push(Buffer.concat(this.stream));
        this.stream = undefined;
        this.cstore = false;
      }
    }
  }

  fallback(bytes: Buffer): void {
    this.fallbackBytes.push(Buffer.from(bytes));
  }

  malformed(reason: string): void {
    this.malformedReasons.push(reason);
  }
}

/** Feeds `wire` in random-sized chunks (1 byte to 40 KiB) and waits until the receiver is idle. */
async function feedChunked(receiver: PDataReceiver, wire: Buffer, seed: number): Promise<void> {
  let x = seed;
  const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x);
  let pos = 0;
  while (pos < wire.length) {
    const size = rand() % 4 === 0 ? 1 + (rand() % 7) : 1 + (rand() % 40_000);
    receiver.feed(wire.subarray(pos, pos + size));
    pos += size;
    if (rand() % 3 === 0) await new Promise((r) => setImmediate(r));
  }
  for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
}

/** An association: A-ASSOCIATE-RQ, C-ECHO, two C-STOREs in 16 KiB-ish PDVs (one PDU with several PDVs). */
function association(datasets: Buffer[]): { wire: Buffer; others: Buffer[] } {
  const assoc = pdu(0x01, randomBytes(300));
  const echo = pdu(0x04, pdv(0x03, randomBytes(70)));
  const parts: Buffer[] = [assoc, echo];
  datasets.forEach((ds, n) => {
    parts.push(pdu(0x04, pdv(0x03, randomBytes(120))));
    const fragments: Buffer[] = [];
    for (let o = 0; o < ds.length; o += 16_000) fragments.push(ds.subarray(o, o + 16_000));
    const pdvs = fragments.map((f, i) => pdv(i === fragments.length - 1 ? 0x02 : 0x00, f));
    if (n === 1) {
      // Several PDVs per PDU, as some senders do: [first, middle], [middle, middle, last].
      parts.push(pdu(0x04, Buffer.concat(pdvs.slice(0, 2))));
      for (let i = 2; i < pdvs.length - 3; i++) parts.push(pdu(0x04, pdvs[i]!));
      parts.push(pdu(0x04, Buffer.concat(pdvs.slice(-3))));
    } else {
      for (const p of pdvs) parts.push(pdu(0x04, p));
    }
  });
  const release = pdu(0x05, Buffer.alloc(4));
  parts.push(release);
  return { wire: Buffer.concat(parts), others: [assoc, echo, release] };
}

/**
 * One seeded association (two C-STOREs, see association()) fed to `lib` through a fresh receiver in random
 * chunks: nothing malformed, and both data sets reach the library's stores intact.
 */
async function feedAssociation(lib: FakeLibrary, seed: number) {
  const datasets = [randomBytes(200_000 + seed * 1000), randomBytes(130_000 + seed)];
  const { wire, others } = association(datasets);
  const receiver = new PDataReceiver(lib);
  await feedChunked(receiver, wire, seed);
  assert.deepEqual(lib.malformedReasons, []);
  assert.equal(lib.stored.length, 2, `seed ${seed}: two stores`);
  assert.ok(lib.stored[0]!.equals(datasets[0]!), `seed ${seed}: first data set intact`);
  assert.ok(lib.stored[1]!.equals(datasets[1]!), `seed ${seed}: second data set intact`);
  return { datasets, wire, others, receiver };
}

test('data sets arrive byte for byte under any chunking; other PDUs reach the library whole and in order', async () => {
  for (let seed = 1; seed <= 25; seed++) {
    const lib = new FakeLibrary();
    const { others, receiver } = await feedAssociation(lib, seed);
    // Non-P-DATA PDUs and the C-ECHO command are handed exactly as sent.
    assert.ok(lib.handed[0]!.equals(others[0]!));
    assert.ok(lib.handed[1]!.equals(others[1]!));
    assert.ok(lib.handed.at(-1)!.equals(others[2]!));
    // The middle fragments took the fast path: the library saw per store one command, the first and the
    // last fragment (for the multi-PDV PDUs: [first+middle] goes whole once the first went slow; [m, m, last]
    // has its middles fast, its last slow).
    assert.ok(receiver.counts.fastPdvs >= 11 + 6, `seed ${seed}: fast PDVs ${receiver.counts.fastPdvs}`);
    assert.equal(lib.handed.length, 3 + 3 + 3, `seed ${seed}: PDUs handed ${lib.handed.length}`);
    const lastOfSecond = parsePData(lib.handed.at(-2)!);
    assert.deepEqual(
      lastOfSecond.map((p) => p.control),
      [0x02],
      'only the last PDV of a mixed PDU goes to the library',
    );
  }
});

test('an unknown PDU type hands that and every later byte to the library accumulator', async () => {
  const lib = new FakeLibrary();
  const receiver = new PDataReceiver(lib);
  const bad = Buffer.concat([pdu(0x09, Buffer.from('abc')), pdu(0x04, pdv(0x03, Buffer.alloc(10)))]);
  const wire = Buffer.concat([pdu(0x01, randomBytes(50)), bad]);
  await feedChunked(receiver, wire, 7);
  assert.equal(lib.handed.length, 1);
  assert.ok(Buffer.concat(lib.fallbackBytes).equals(bad));
  receiver.feed(Buffer.from('later'));
  assert.equal(Buffer.concat(lib.fallbackBytes).toString('latin1').slice(-5), 'later');
});

test('a PDV running past its PDU, or shorter than its header, stops the receiver', async () => {
  for (const body of [
    Buffer.from([0, 0, 0, 50, 1, 0, 1, 2, 3]), // declares 50 bytes, the PDU holds 3
    Buffer.from([0, 0, 0, 1, 1, 0]), // item length 1 < 2
    Buffer.from([0, 0, 0]), // header cut by the PDU's end
  ]) {
    const lib = new FakeLibrary();
    const receiver = new PDataReceiver(lib);
    await feedChunked(receiver, Buffer.concat([pdu(0x04, body), pdu(0x05, Buffer.alloc(4))]), 3);
    assert.equal(lib.malformedReasons.length, 1, body.toString('hex'));
    assert.equal(lib.handed.length, 0, 'nothing after the broken PDU is read');
  }
});

/**
 * A host that also opens and finishes stores (as scp.ts does for dcmjs-dimse): no data-set fragment of a
 * C-STORE should then reach the library. Checks that each PDV's pieces are written corked, and that the
 * stream is finished once, after its last byte, with the PDV's presentation context.
 */
class LeanLibrary extends FakeLibrary {
  opened = 0;
  finishedPcs: number[] = [];
  corked = 0;
  corks = 0;
  /** The most bytes written while corked at once. */
  mostHeld = 0;
  private held = 0;
  /** write() answers false (full: the socket is paused until a drain) once this much is held corked. */
  fullAt = Infinity;
  fullAnswers = 0;
  private full = false;
  declineContext: number | undefined;
  private open: Buffer[] | undefined;
  protected pending = false;

  private openSink: ReturnType<LeanLibrary['sink']> | undefined;
  pdusStarted = 0;

  pduStarted(): void {
    this.pdusStarted++;
  }

  override storeStream() {
    return this.openSink;
  }

  openStore(pc: number) {
    if (!this.pending || this.open !== undefined || pc === this.declineContext) return undefined;
    this.opened++;
    this.open = [];
    this.openSink = this.sink(this.open);
    return this.openSink;
  }

  finishStore(pc: number): void {
    assert.equal(this.corked, 0, 'finished after the last PDV was uncorked');
    assert.ok(this.open !== undefined, 'finish without an open store');
    this.finishedPcs.push(pc);
    this.stored.push(Buffer.concat(this.open));
    this.open = undefined;
    this.openSink = undefined;
    this.pending = false;
  }

  override async toLibrary(p: Buffer): Promise<void> {
    if (p[0] === 0x04) {
      const pdvs = parsePData(p);
      // A C-STORE command (last command fragment) makes a store pending, as the library's dimse does.
      if (pdvs.length === 1 && pdvs[0]!.control === 0x03 && pdvs[0]!.value.length === 120)
        this.pending = true;
    }
    return super.toLibrary(p);
  }

  private sink(parts: Buffer[]) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const lib = this;
    return {
      write: (chunk: Buffer) => {
        // A corked stream never drains: writing on while full and corked would wait forever.
        assert.ok(!(this.full && this.corked > 0), 'full and still corked');
        parts.push(Buffer.from(chunk));
        if (this.corked > 0) {
          this.held += chunk.length;
          this.mostHeld = Math.max(this.mostHeld, this.held);
          if (this.held >= this.fullAt) this.full = true;
        }
        if (this.full) this.fullAnswers++;
        return !this.full;
      },
      cork: () => {
        // The socket waits for this stream's drain, which a corked stream never gives.
        assert.ok(!this.full, 'corked while the stream waits to drain');
        this.corked++;
        this.corks++;
      },
      uncork: () => {
        this.corked--;
        this.held = 0;
        // What was held goes to the file; the stream drains later (as a Writable does), if not corked again.
        if (this.full) setImmediate(() => this.corked === 0 && (this.full = false));
      },
      get writableNeedDrain() {
        return lib.full;
      },
    };
  }
}

test('with openStore and finishStore, no data-set fragment reaches the library, under any chunking', async () => {
  for (let seed = 1; seed <= 25; seed++) {
    const lib = new LeanLibrary();
    const { datasets, wire, others, receiver } = await feedAssociation(lib, seed);
    assert.equal(lib.opened, 2);
    assert.deepEqual(lib.finishedPcs, [1, 1]);
    assert.equal(lib.corked, 0, 'every cork undone');
    assert.equal(lib.corks, 2, 'each data set (under CORK_BYTES) held whole: one write');
    let pdus = 0;
    for (let o = 0; o < wire.length; o += 6 + wire.readUInt32BE(o + 2)) pdus++;
    assert.equal(lib.pdusStarted, pdus, 'every PDU, fast or not, restarts the idle timer');
    // The library saw the association, the C-ECHO, the two C-STORE commands and the release: nothing else.
    assert.equal(lib.handed.length, 5, `seed ${seed}: PDUs handed ${lib.handed.length}`);
    assert.ok(lib.handed[0]!.equals(others[0]!));
    assert.ok(lib.handed[1]!.equals(others[1]!));
    assert.ok(lib.handed.at(-1)!.equals(others[2]!));
    const fragments = datasets.reduce((n, d) => n + Math.ceil(d.length / 16_000), 0);
    assert.equal(receiver.counts.fastPdvs, fragments, `seed ${seed}: every data-set PDV fast`);
  }
});

/** Also takes C-STORE commands (the 120-byte command PDVs of association()) as scp.ts does; declines the rest. */
class CommandTakingLibrary extends LeanLibrary {
  offered: Buffer[] = [];

  takeCommand(_pc: number, command: Buffer): boolean {
    this.offered.push(Buffer.from(command));
    if (command.length !== 120) return false;
    this.pending = true;
    return true;
  }
}

test('a PDU that is one whole command is offered to the host: taken, the library never sees it', async () => {
  for (let seed = 1; seed <= 25; seed++) {
    const lib = new CommandTakingLibrary();
    const { others, receiver } = await feedAssociation(lib, seed);
    // Offered: the C-ECHO command (declined) and the two C-STORE commands, byte for byte.
    assert.deepEqual(
      lib.offered.map((c) => c.length),
      [70, 120, 120],
      `seed ${seed}: what was offered`,
    );
    assert.ok(lib.offered[0]!.equals(others[1]!.subarray(12)), 'the declined command intact');
    // The library saw the association, the declined C-ECHO and the release: nothing else.
    assert.equal(lib.handed.length, 3, `seed ${seed}: PDUs handed ${lib.handed.length}`);
    assert.ok(lib.handed[1]!.equals(others[1]!), 'a declined command goes to the library whole');
    assert.equal(receiver.counts.hostCommands, 2);
  }
});

test('a command in parts, or beside another PDV, is never offered: it goes to the library', async () => {
  const command = randomBytes(120);
  const wire = Buffer.concat([
    // The command in two fragments (not last, then last), in one PDU.
    pdu(0x04, Buffer.concat([pdv(0x01, command.subarray(0, 50)), pdv(0x03, command.subarray(50))])),
    // A whole command followed by a data-set PDV in the same PDU.
    pdu(0x04, Buffer.concat([pdv(0x03, command), pdv(0x02, randomBytes(10))])),
  ]);
  const lib = new CommandTakingLibrary();
  const receiver = new PDataReceiver(lib);
  await feedChunked(receiver, wire, 5);
  assert.deepEqual(lib.offered, []);
  assert.equal(lib.handed.length, 2);
  assert.equal(receiver.counts.hostCommands, 0);
});

test('when the host declines to open the store, the first fragment and its PDU go to the library', async () => {
  const datasets = [randomBytes(100_000), randomBytes(130_000)];
  const { wire } = association(datasets);
  const lib = new LeanLibrary();
  lib.declineContext = 1;
  const receiver = new PDataReceiver(lib);
  await feedChunked(receiver, wire, 11);
  // The library (FakeLibrary's path) then stores both data sets from whole PDUs, as before.
  assert.equal(lib.opened, 0);
  assert.deepEqual(lib.finishedPcs, []);
  assert.equal(lib.stored.length, 2);
  assert.ok(lib.stored[0]!.equals(datasets[0]!));
  assert.ok(lib.stored[1]!.equals(datasets[1]!));
});

test('a data set bigger than CORK_BYTES is let go in parts of about CORK_BYTES', async () => {
  const datasets = [randomBytes(Math.floor(2.5 * CORK_BYTES)), randomBytes(130_000)];
  const { wire } = association(datasets);
  const lib = new LeanLibrary();
  const receiver = new PDataReceiver(lib);
  await feedChunked(receiver, wire, 5);
  assert.ok(lib.stored[0]!.equals(datasets[0]!));
  assert.ok(lib.stored[1]!.equals(datasets[1]!));
  assert.equal(lib.corks, 3 + 1);
  assert.ok(lib.mostHeld < CORK_BYTES + 16_000, `held at most ${lib.mostHeld} bytes`);
  assert.equal(lib.corked, 0);
});

test('a stream that reports full is uncorked at once (a corked stream never drains: no stall)', async () => {
  const datasets = [randomBytes(Math.floor(2.5 * CORK_BYTES)), randomBytes(130_000)];
  const { wire } = association(datasets);
  const lib = new LeanLibrary();
  lib.fullAt = 300_000;
  const receiver = new PDataReceiver(lib);
  await feedChunked(receiver, wire, 9);
  assert.ok(lib.fullAnswers >= 5, `full ${lib.fullAnswers} times`);
  assert.ok(lib.stored[0]!.equals(datasets[0]!));
  assert.ok(lib.stored[1]!.equals(datasets[1]!));
  assert.equal(lib.corked, 0);
});

/**
 * The store stream as it really is (a Writable with a slow disk behind it and a small high-water mark), and
 * the socket as scp.ts drives it: paused when a write says the stream is full, resumed at its 'drain'. A
 * stream left corked while the socket waits never drains: the feed then stalls.
 */
class WritableLibrary extends FakeLibrary {
  paused = false;
  pauses = 0;
  private pending = false;
  private sink: (Writable & { parts: Buffer[] }) | undefined;
  readonly sinks: (Writable & { parts: Buffer[] })[] = [];

  override storeStream() {
    return this.sink;
  }

  openStore() {
    if (!this.pending || this.sink !== undefined) return undefined;
    const parts: Buffer[] = [];
    const slowDisk = (cb: () => void) => setTimeout(cb, 1);
    const w = new Writable({
      highWaterMark: 200_000,
      write: (chunk: Buffer, _enc, cb) => (parts.push(Buffer.from(chunk)), slowDisk(cb)),
      writev: (chunks, cb) => (
        parts.push(...chunks.map((c) => Buffer.from(c.chunk as Buffer))),
        slowDisk(cb)
      ),
    });
    const write = w.write.bind(w);
    w.write = ((chunk: Buffer) => {
      const ok = write(chunk);
      if (!ok && !this.paused) {
        this.paused = true;
        this.pauses++;
        w.once('drain', () => (this.paused = false));
      }
      return ok;
    }) as typeof w.write;
    this.sink = Object.assign(w, { parts });
    this.sinks.push(this.sink);
    return this.sink;
  }

  finishStore(): void {
    this.sink!.end();
    this.sink = undefined;
    this.pending = false;
  }

  override async toLibrary(p: Buffer): Promise<void> {
    if (p[0] === 0x04) {
      const pdvs = parsePData(p);
      if (pdvs.length === 1 && pdvs[0]!.control === 0x03 && pdvs[0]!.value.length === 120)
        this.pending = true;
    }
    return super.toLibrary(p);
  }
}

test('a slow store stream pauses the socket and resumes it: never left corked while it waits (no stall)', async () => {
  for (const seed of [1, 2, 3]) {
    const datasets = [randomBytes(Math.floor(1.5 * CORK_BYTES)), randomBytes(700_000)];
    const { wire } = association(datasets);
    const lib = new WritableLibrary();
    const receiver = new PDataReceiver(lib);
    let x = seed;
    const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x);
    // Chunks as a socket often delivers them: some end right after a PDU's and its PDV's headers.
    const cuts: number[] = [];
    for (let o = 0; o < wire.length; o += 6 + wire.readUInt32BE(o + 2)) {
      const end = o + 6 + wire.readUInt32BE(o + 2);
      cuts.push(Math.min(o + 12, end));
      for (let c = o + 12 + (rand() % 70_000); c < end; c += 1 + (rand() % 70_000)) cuts.push(c);
      cuts.push(end);
    }
    let pos = 0;
    for (const cut of cuts) {
      // The socket: nothing more is read while paused.
      for (let wait = 0; lib.paused; wait++) {
        assert.ok(wait < 2000, `seed ${seed}: stalled at byte ${pos} of ${wire.length}, paused for good`);
        await new Promise((r) => setTimeout(r, 1));
      }
      if (cut <= pos) continue;
      receiver.feed(wire.subarray(pos, cut));
      pos = cut;
      await new Promise((r) => setImmediate(r));
    }
    for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
    assert.ok(lib.pauses > 0, 'the stream was full at times');
    assert.equal(lib.sinks.length, 2);
    await Promise.all(
      lib.sinks.map((w) => (w.writableFinished ? undefined : new Promise((r) => w.once('finish', r)))),
    );
    assert.ok(Buffer.concat(lib.sinks[0]!.parts).equals(datasets[0]!), `seed ${seed}: first data set intact`);
    assert.ok(
      Buffer.concat(lib.sinks[1]!.parts).equals(datasets[1]!),
      `seed ${seed}: second data set intact`,
    );
  }
});
