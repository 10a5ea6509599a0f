import { open, type FileHandle } from 'node:fs/promises';

// Just enough of ELF64 (little-endian, x86-64 and aarch64 Linux) to answer two questions about a shared
// library without loading it: which libraries the dynamic loader must find for it (DT_NEEDED), and
// which GPU architectures its CUDA fat binary has kernels for. Reads headers at their offsets, so a
// 230 MB provider library costs a few small reads.

export class ElfError extends Error {
  override name = 'ElfError';
}

interface Section {
  name: string;
  type: number;
  offset: number;
  size: number;
  link: number;
}

const SHT_DYNAMIC = 6;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const FATBIN_MAGIC = 0xba55ed50;
const FATBIN_KIND_PTX = 1;
const FATBIN_KIND_CUBIN = 2;

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw new ElfError(`truncated file: wanted ${length} bytes at ${offset}`);
  return buf;
}

async function sections(fh: FileHandle, file: string): Promise<Section[]> {
  const header = await readAt(fh, 0, 64);
  if (header.readUInt32BE(0) !== 0x7f454c46) throw new ElfError(`${file} is not an ELF file`);
  if (header[4] !== 2 || header[5] !== 1) throw new ElfError(`${file} is not a little-endian 64-bit ELF`);
  const shoff = Number(header.readBigUInt64LE(0x28));
  const shentsize = header.readUInt16LE(0x3a);
  const shnum = header.readUInt16LE(0x3c);
  const shstrndx = header.readUInt16LE(0x3e);
  if (shoff === 0 || shnum === 0 || shentsize < 64) throw new ElfError(`${file} has no section table`);
  const table = await readAt(fh, shoff, shentsize * shnum);
  const raw = Array.from({ length: shnum }, (_, i) => {
    const at = i * shentsize;
    return {
      nameOffset: table.readUInt32LE(at),
      type: table.readUInt32LE(at + 4),
      offset: Number(table.readBigUInt64LE(at + 0x18)),
      size: Number(table.readBigUInt64LE(at + 0x20)),
      link: table.readUInt32LE(at + 0x28),
    };
  });
  const names = raw[shstrndx];
  if (!names) throw new ElfError(`${file}: bad section name table index`);
  const strtab = await readAt(fh, names.offset, names.size);
  return raw.map((s) => ({ ...s, name: cString(strtab, s.nameOffset) }));
}

function cString(buf: Buffer, at: number): string {
  const end = buf.indexOf(0, at);
  return buf.toString('latin1', at, end < 0 ? buf.length : end);
}

/** The DT_NEEDED entries of a shared library, in order (e.g. `libcudart.so.13`). */
export async function readNeeded(file: string): Promise<string[]> {
  const fh = await open(file, 'r');
  try {
    const all = await sections(fh, file);
    const dynamic = all.find((s) => s.type === SHT_DYNAMIC);
    if (!dynamic) return [];
    const dynstr = all[dynamic.link];
    if (!dynstr) throw new ElfError(`${file}: .dynamic links to no string table`);
    const [entries, strings] = await Promise.all([
      readAt(fh, dynamic.offset, dynamic.size),
      readAt(fh, dynstr.offset, dynstr.size),
    ]);
    const needed: string[] = [];
    for (let at = 0; at + 16 <= entries.length; at += 16) {
      const tag = entries.readBigInt64LE(at);
      if (tag === DT_NULL) break;
      if (tag === DT_NEEDED) needed.push(cString(strings, Number(entries.readBigUInt64LE(at + 8))));
    }
    return needed;
  } finally {
    await fh.close();
  }
}

/**
 * NUL-terminated strings in a section (`.rodata` by default, the whole file when it has none) that
 * match `pattern` exactly, e.g. the version string a library was built with. Reads in 8 MiB chunks.
 */
export async function findStrings(file: string, pattern: RegExp, sectionName = '.rodata'): Promise<string[]> {
  const fh = await open(file, 'r');
  try {
    // A file that is not ELF (or has no such section) is scanned whole.
    const section = await sections(fh, file).then(
      (all) => all.find((s) => s.name === sectionName),
      () => undefined,
    );
    const start = section?.offset ?? 0;
    const end = section ? section.offset + section.size : (await fh.stat()).size;
    const CHUNK = 8 << 20;
    const OVERLAP = 256; // a string cut at a chunk edge is seen whole in the next chunk
    const found = new Set<string>();
    const exact = new RegExp(`^(?:${pattern.source})$`);
    for (let at = start; at < end; at += CHUNK) {
      const length = Math.min(CHUNK + OVERLAP, end - at);
      const pieces = (await readAt(fh, at, length)).toString('latin1').split('\0');
      // The first piece of a later chunk and the last piece of a cut chunk are fragments of strings
      // seen whole in the neighbouring chunk.
      if (at > start) pieces.shift();
      if (at + length < end) pieces.pop();
      for (const s of pieces) if (s.length > 0 && s.length < OVERLAP && exact.test(s)) found.add(s);
    }
    return [...found];
  } finally {
    await fh.close();
  }
}

export interface GpuArchitectures {
  /** Compute capabilities with compiled kernels (SASS), e.g. 75 for sm_75, 90 for sm_90. */
  cubin: number[];
  /** Compute capabilities with PTX, which the driver can compile for newer GPUs. */
  ptx: number[];
}

/**
 * Walks the `.nv_fatbin` section: a run of fat binaries, each a header followed by entries that name
 * their kind (PTX or cubin) and target architecture. Returns null for a library with no CUDA code.
 */
export async function readGpuArchitectures(file: string): Promise<GpuArchitectures | null> {
  const fh = await open(file, 'r');
  try {
    const section = (await sections(fh, file)).find((s) => s.name === '.nv_fatbin');
    if (!section) return null;
    const cubin = new Set<number>();
    const ptx = new Set<number>();
    const end = section.offset + section.size;
    let at = section.offset;
    while (at + 16 <= end) {
      const header = await readAt(fh, at, 16);
      if (header.readUInt32LE(0) !== FATBIN_MAGIC) {
        at += 8; // fat binaries are 8-byte aligned; skip padding between them
        continue;
      }
      const headerSize = header.readUInt16LE(6);
      const fatSize = Number(header.readBigUInt64LE(8));
      let entry = at + headerSize;
      const fatEnd = entry + fatSize;
      while (entry + 32 <= fatEnd) {
        const e = await readAt(fh, entry, 32);
        const kind = e.readUInt16LE(0);
        const entryHeaderSize = e.readUInt32LE(4);
        const payload = Number(e.readBigUInt64LE(8));
        const arch = e.readUInt32LE(28);
        if (kind === FATBIN_KIND_CUBIN) cubin.add(arch);
        else if (kind === FATBIN_KIND_PTX) ptx.add(arch);
        if (entryHeaderSize === 0) break;
        entry += entryHeaderSize + payload;
      }
      at = fatEnd;
    }
    const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
    return { cubin: sorted(cubin), ptx: sorted(ptx) };
  } finally {
    await fh.close();
  }
}
