import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

// Minimal ELF64 shared-library look-alikes for the doctor and provider-install tests: a section table
// with .dynamic/.dynstr (DT_NEEDED entries), .rodata (NUL-separated strings, e.g. an ONNX Runtime
// version) and optionally .nv_fatbin (cubin/PTX entries per architecture). Never loaded, only read.

export interface FakeElf {
  needed?: string[];
  strings?: string[];
  /** Architectures with compiled kernels (e.g. 75 for sm_75). */
  cubin?: number[];
  ptx?: number[];
}

function fatbin(cubin: number[], ptx: number[]): Buffer {
  const entries = [...cubin.map((a) => [2, a]), ...ptx.map((a) => [1, a])].map(([kind, arch]) => {
    const header = Buffer.alloc(64);
    const payload = Buffer.alloc(40, 0xab);
    header.writeUInt16LE(kind!, 0);
    header.writeUInt32LE(64, 4);
    header.writeBigUInt64LE(BigInt(payload.length), 8);
    header.writeUInt32LE(arch!, 28);
    return Buffer.concat([header, payload]);
  });
  const body = Buffer.concat(entries);
  const header = Buffer.alloc(16);
  header.writeUInt32LE(0xba55ed50, 0);
  header.writeUInt16LE(1, 4);
  header.writeUInt16LE(16, 6);
  header.writeBigUInt64LE(BigInt(body.length), 8);
  return Buffer.concat([header, body]);
}

export function fakeElf(spec: FakeElf): Buffer {
  const dynstrParts = [''];
  const dynamic: Buffer[] = [];
  for (const lib of spec.needed ?? []) {
    const entry = Buffer.alloc(16);
    entry.writeBigInt64LE(1n, 0);
    entry.writeBigUInt64LE(BigInt(Buffer.byteLength(dynstrParts.join('\0') + '\0')), 8);
    dynstrParts.push(lib);
    dynamic.push(entry);
  }
  dynamic.push(Buffer.alloc(16)); // DT_NULL
  const sections: { name: string; type: number; data: Buffer; link?: number }[] = [
    { name: '', type: 0, data: Buffer.alloc(0) },
    { name: '.shstrtab', type: 3, data: Buffer.alloc(0) },
    { name: '.dynstr', type: 3, data: Buffer.from(dynstrParts.join('\0') + '\0', 'latin1') },
    { name: '.dynamic', type: 6, data: Buffer.concat(dynamic), link: 2 },
    { name: '.rodata', type: 1, data: Buffer.from(['', ...(spec.strings ?? []), ''].join('\0'), 'latin1') },
  ];
  if (spec.cubin || spec.ptx)
    sections.push({ name: '.nv_fatbin', type: 1, data: fatbin(spec.cubin ?? [], spec.ptx ?? []) });
  const names: number[] = [];
  let shstr = '';
  for (const s of sections) {
    names.push(Buffer.byteLength(shstr));
    shstr += s.name + '\0';
  }
  sections[1]!.data = Buffer.from(shstr, 'latin1');

  const chunks: Buffer[] = [];
  const offsets: number[] = [];
  let at = 64;
  for (const s of sections) {
    const pad = (8 - (at % 8)) % 8;
    chunks.push(Buffer.alloc(pad));
    at += pad;
    offsets.push(at);
    chunks.push(s.data);
    at += s.data.length;
  }
  const pad = (8 - (at % 8)) % 8;
  chunks.push(Buffer.alloc(pad));
  at += pad;
  const shoff = at;
  const table = Buffer.alloc(64 * sections.length);
  sections.forEach((s, i) => {
    const o = i * 64;
    table.writeUInt32LE(names[i]!, o);
    table.writeUInt32LE(s.type, o + 4);
    table.writeBigUInt64LE(BigInt(offsets[i]!), o + 0x18);
    table.writeBigUInt64LE(BigInt(s.data.length), o + 0x20);
    table.writeUInt32LE(s.link ?? 0, o + 0x28);
  });
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2; // 64-bit
  header[5] = 1; // little-endian
  header[6] = 1;
  header.writeUInt16LE(3, 0x10); // ET_DYN
  header.writeUInt16LE(62, 0x12); // x86-64
  header.writeUInt32LE(1, 0x14);
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(64, 0x34);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(sections.length, 0x3c);
  header.writeUInt16LE(1, 0x3e);
  return Buffer.concat([header, ...chunks, table]);
}

/** An onnxruntime-node package folder with a fake core library of `version` (and nothing else). */
export async function fakeOrtPackage(dir: string, version: string, coreVersion = version): Promise<string> {
  const bin = path.join(dir, 'bin', 'napi-v6', process.platform, process.arch);
  await mkdir(bin, { recursive: true });
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'onnxruntime-node', version }));
  await writeFile(
    path.join(bin, 'libonnxruntime.so.1'),
    fakeElf({ needed: ['libstdc++.so.6', 'libc.so.6'], strings: ['VERS_' + coreVersion, coreVersion] }),
  );
  return bin;
}

/** The CUDA provider as ONNX Runtime 1.29.0 from the asus4 package looks to the doctor. */
export function fakeCudaProvider(version: string): Buffer {
  return fakeElf({
    needed: [
      'libcublasLt.so.13',
      'libcublas.so.13',
      'libcurand.so.10',
      'libcudart.so.13',
      'libcuda.so.1',
      'libc.so.6',
    ],
    strings: ['Unable to load any libcudart.so.* library.', version, '1.3.9'],
    cubin: [75, 80, 86, 89, 90, 120],
  });
}
