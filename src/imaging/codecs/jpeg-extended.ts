// JPEG Extended (Process 2 & 4, DICOM .4.51) greyscale decoder: sequential DCT, Huffman, 8 or 12-bit
// samples. Written here because no maintained JavaScript or WebAssembly package decodes 12-bit JPEG:
// dcmjs-codecs refuses it, @cornerstonejs/dicom-codec has no 12-bit build, and the pure-JS jpeg.js in
// cornerstone's image loader is off by +15 against dcmtk. The inverse DCT is IJG's integer "islow"
// (jidctint.c) with its range-limit table, so the output is bit-identical to libjpeg and dcmtk's
// dcmdjpeg (tested). Anything outside that scope (progressive, lossless, arithmetic, colour,
// hierarchical) is refused by name, and corrupt entropy data is an error, never a zero-filled guess.

export class JpegDataError extends Error {
  override name = 'JpegDataError';
}

export interface JpegImage {
  width: number;
  height: number;
  /** Sample precision from the frame header: 8 or 12. */
  precision: number;
  /** Row-major samples, width × height. */
  samples: Uint16Array;
}

/** Zig-zag scan position → natural (row-major) position in an 8×8 block. */
const ZIGZAG = Uint8Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
  53, 60, 61, 54, 47, 55, 62, 63,
]);

/** Start-of-frame markers this decoder does not handle, named for the error message. */
const OTHER_PROCESSES: Record<number, string> = {
  0xc2: 'progressive DCT',
  0xc3: 'lossless',
  0xc5: 'differential sequential',
  0xc6: 'differential progressive',
  0xc7: 'differential lossless',
  0xc9: 'arithmetic-coded sequential',
  0xca: 'arithmetic-coded progressive',
  0xcb: 'arithmetic-coded lossless',
  0xcd: 'arithmetic-coded differential sequential',
  0xce: 'arithmetic-coded differential progressive',
  0xcf: 'arithmetic-coded differential lossless',
};

interface HuffmanTable {
  /** Largest code of each length 1..16 (-1 when none); index 17 is a sentinel. */
  maxCode: Int32Array;
  /** Offset into `values` of the first code of each length, minus that code. */
  offset: Int32Array;
  values: Uint8Array;
}

interface Frame {
  precision: number;
  width: number;
  height: number;
  componentId: number;
  quantTable: number;
}

export interface JpegLimits {
  /** The frame must be exactly this size (the DICOM Rows and Columns, already validated). */
  rows: number;
  columns: number;
}

export function decodeJpegExtended(data: Uint8Array, limits: JpegLimits): JpegImage {
  return new Decoder(data, limits).decode();
}

class Decoder {
  private pos = 0;
  private readonly quant: (Int32Array | undefined)[] = [];
  private readonly dcTables: (HuffmanTable | undefined)[] = [];
  private readonly acTables: (HuffmanTable | undefined)[] = [];
  private restartInterval = 0;
  private frame: Frame | undefined;
  private image: JpegImage | undefined;

  constructor(
    private readonly data: Uint8Array,
    private readonly limits: JpegLimits,
  ) {}

  decode(): JpegImage {
    if (this.data.length < 4 || this.data[0] !== 0xff || this.data[1] !== 0xd8) {
      throw new JpegDataError('the frame does not start with a JPEG SOI marker');
    }
    this.pos = 2;
    for (;;) {
      const marker = this.nextMarker();
      if (marker === 0xd9) break; // EOI
      if (marker >= 0xd0 && marker <= 0xd7) continue; // stray RSTn between segments: nothing to do
      const length = this.u16();
      const end = this.pos + length - 2;
      if (length < 2 || end > this.data.length)
        throw new JpegDataError(`marker 0x${hex(marker)} runs past the data`);
      if (marker === 0xdb) this.readQuantTables(end);
      else if (marker === 0xc4) this.readHuffmanTables(end);
      else if (marker === 0xdd) {
        if (length !== 4) throw new JpegDataError(`DRI segment length ${length} is not 4`);
        this.restartInterval = this.u16();
      } else if (marker === 0xc0 || marker === 0xc1) this.readFrame(end);
      else if (marker === 0xda) {
        this.readScanHeader(end);
        this.pos = end;
        this.decodeScan();
        continue;
      } else if (OTHER_PROCESSES[marker]) {
        throw new JpegDataError(`${OTHER_PROCESSES[marker]} JPEG is not JPEG Extended (Process 2 & 4)`);
      } else if (marker === 0xdc) {
        throw new JpegDataError('a DNL marker (height defined after the scan) is not supported');
      }
      // APPn, COM and anything else with a length: skipped.
      this.pos = end;
    }
    if (!this.image) throw new JpegDataError('the JPEG stream holds no scan');
    return this.image;
  }

  private nextMarker(): number {
    const d = this.data;
    if (this.pos >= d.length - 1 || d[this.pos] !== 0xff) {
      throw new JpegDataError(`expected a JPEG marker at byte ${this.pos}`);
    }
    while (this.pos < d.length && d[this.pos] === 0xff) this.pos++; // fill bytes
    if (this.pos >= d.length) throw new JpegDataError('the JPEG stream ends without an EOI marker');
    return d[this.pos++]!;
  }

  private u16(): number {
    if (this.pos + 2 > this.data.length) throw new JpegDataError('the JPEG stream is truncated');
    const v = (this.data[this.pos]! << 8) | this.data[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  private readQuantTables(end: number): void {
    const d = this.data;
    while (this.pos < end) {
      const pq = d[this.pos]! >> 4;
      const tq = d[this.pos++]! & 15;
      if (tq > 3 || pq > 1) throw new JpegDataError(`bad quantisation table header (Pq ${pq}, Tq ${tq})`);
      if (this.pos + 64 * (pq + 1) > end) throw new JpegDataError('quantisation table runs past its segment');
      // Kept in zig-zag order, as the coefficients arrive.
      const table = new Int32Array(64);
      for (let k = 0; k < 64; k++) {
        table[k] = pq ? (d[this.pos]! << 8) | d[this.pos + 1]! : d[this.pos]!;
        this.pos += pq + 1;
      }
      this.quant[tq] = table;
    }
  }

  private readHuffmanTables(end: number): void {
    const d = this.data;
    while (this.pos < end) {
      const tc = d[this.pos]! >> 4;
      const th = d[this.pos++]! & 15;
      if (tc > 1 || th > 3) throw new JpegDataError(`bad Huffman table header (Tc ${tc}, Th ${th})`);
      if (this.pos + 16 > end) throw new JpegDataError('Huffman table runs past its segment');
      const counts = d.subarray(this.pos, this.pos + 16);
      this.pos += 16;
      const total = counts.reduce((s, c) => s + c, 0);
      if (total > 256 || this.pos + total > end)
        throw new JpegDataError('Huffman table has too many symbols');
      const values = d.slice(this.pos, this.pos + total);
      this.pos += total;
      const maxCode = new Int32Array(18).fill(-1);
      const offset = new Int32Array(17);
      let code = 0;
      let k = 0;
      for (let len = 1; len <= 16; len++) {
        offset[len] = k - code;
        code += counts[len - 1]!;
        k += counts[len - 1]!;
        if (counts[len - 1]!) maxCode[len] = code - 1;
        if (code > 1 << len) throw new JpegDataError('Huffman table codes overflow their lengths');
        code <<= 1;
      }
      maxCode[17] = 0x7fffffff;
      (tc === 0 ? this.dcTables : this.acTables)[th] = { maxCode, offset, values };
    }
  }

  private readFrame(end: number): void {
    if (this.frame) throw new JpegDataError('more than one frame header');
    const d = this.data;
    if (end - this.pos < 6) throw new JpegDataError('frame header is too short');
    const precision = d[this.pos]!;
    const height = (d[this.pos + 1]! << 8) | d[this.pos + 2]!;
    const width = (d[this.pos + 3]! << 8) | d[this.pos + 4]!;
    const components = d[this.pos + 5]!;
    if (precision !== 8 && precision !== 12)
      throw new JpegDataError(`sample precision ${precision} is not 8 or 12`);
    if (components !== 1) {
      throw new JpegDataError(`${components}-component JPEG Extended is not supported (greyscale only)`);
    }
    if (end - this.pos < 9) throw new JpegDataError('frame header is too short');
    if (height === 0) throw new JpegDataError('a frame height defined by DNL is not supported');
    if (width !== this.limits.columns || height !== this.limits.rows) {
      throw new JpegDataError(
        `the JPEG frame is ${width}×${height}, the DICOM header says ${this.limits.columns}×${this.limits.rows}`,
      );
    }
    const quantTable = d[this.pos + 8]!;
    if (quantTable > 3) throw new JpegDataError(`quantisation table ${quantTable} does not exist`);
    this.frame = { precision, width, height, componentId: d[this.pos + 6]!, quantTable };
  }

  private dcTable = 0;
  private acTable = 0;

  private readScanHeader(end: number): void {
    if (!this.frame) throw new JpegDataError('a scan comes before the frame header');
    if (this.image) throw new JpegDataError('more than one scan for a single-component frame');
    const d = this.data;
    const count = d[this.pos]!;
    if (count !== 1 || end - this.pos < 6)
      throw new JpegDataError(`scan header names ${count} components, not 1`);
    if (d[this.pos + 1] !== this.frame.componentId)
      throw new JpegDataError('scan names an unknown component');
    this.dcTable = d[this.pos + 2]! >> 4;
    this.acTable = d[this.pos + 2]! & 15;
    // Ss/Se/Ah/Al are ignored for sequential JPEG, as libjpeg does (some real files set them oddly).
  }

  // Entropy-coded segment reader. A marker ends the data: needing bits beyond it means the segment
  // is truncated or corrupt.
  private bitBuffer = 0;
  private bitCount = 0;

  private fill(): void {
    const d = this.data;
    const byte = d[this.pos];
    if (byte === undefined || (byte === 0xff && d[this.pos + 1] !== 0x00)) {
      throw new JpegDataError('the entropy-coded data ends early (truncated or corrupt JPEG)');
    }
    this.pos += byte === 0xff ? 2 : 1; // FF 00 is a stuffed FF
    this.bitBuffer = ((this.bitBuffer << 8) | byte) & 0xffffff;
    this.bitCount += 8;
  }

  private bits(n: number): number {
    while (this.bitCount < n) this.fill();
    this.bitCount -= n;
    return (this.bitBuffer >> this.bitCount) & ((1 << n) - 1);
  }

  private huffman(table: HuffmanTable): number {
    let code = this.bits(1);
    let len = 1;
    while (code > table.maxCode[len]!) {
      code = (code << 1) | this.bits(1);
      if (++len > 16) throw new JpegDataError('corrupt JPEG data: no Huffman code matches');
    }
    return table.values[table.offset[len]! + code]!;
  }

  /** F.2.2.1 EXTEND of an s-bit magnitude category. */
  private received(s: number): number {
    if (s === 0) return 0;
    if (s > 16) throw new JpegDataError(`corrupt JPEG data: magnitude category ${s}`);
    const v = this.bits(s);
    return v < 1 << (s - 1) ? v - (1 << s) + 1 : v;
  }

  private decodeScan(): void {
    const frame = this.frame!;
    const quant = this.quant[frame.quantTable];
    const dc = this.dcTables[this.dcTable];
    const ac = this.acTables[this.acTable];
    if (!quant) throw new JpegDataError(`quantisation table ${frame.quantTable} is not defined`);
    if (!dc || !ac) throw new JpegDataError('the scan uses a Huffman table that is not defined');
    const out = new Uint16Array(frame.width * frame.height);
    const idct = new InverseDct(frame.precision);
    const block = new Int32Array(64);
    const pixels = new Uint16Array(64);
    const blocksAcross = Math.ceil(frame.width / 8);
    const blocksDown = Math.ceil(frame.height / 8);
    const total = blocksAcross * blocksDown;
    let predictor = 0;
    for (let b = 0; b < total; b++) {
      if (this.restartInterval && b > 0 && b % this.restartInterval === 0) {
        this.restart();
        predictor = 0;
      }
      block.fill(0);
      // libjpeg stores coefficients as 16-bit JCOEF (the predictor itself is an int): wrap the same way.
      predictor = (predictor + this.received(this.huffman(dc))) | 0;
      block[0] = Math.imul((predictor << 16) >> 16, quant[0]!);
      for (let k = 1; k < 64;) {
        const rs = this.huffman(ac);
        const r = rs >> 4;
        const s = rs & 15;
        if (s === 0) {
          if (r !== 15) break; // EOB
          k += 16;
          continue;
        }
        k += r;
        if (k > 63) throw new JpegDataError('corrupt JPEG data: coefficient index past 63');
        block[ZIGZAG[k]!] = Math.imul(this.received(s), quant[k]!);
        k++;
      }
      idct.transform(block, pixels);
      const x0 = (b % blocksAcross) * 8;
      const y0 = Math.floor(b / blocksAcross) * 8;
      const w = Math.min(8, frame.width - x0);
      const h = Math.min(8, frame.height - y0);
      for (let y = 0; y < h; y++) {
        out.set(pixels.subarray(y * 8, y * 8 + w), (y0 + y) * frame.width + x0);
      }
    }
    this.image = { width: frame.width, height: frame.height, precision: frame.precision, samples: out };
    // Skip to the marker that ends the scan (padding bits are ignored).
    this.bitCount = 0;
    while (
      this.pos < this.data.length - 1 &&
      !(this.data[this.pos] === 0xff && this.data[this.pos + 1] !== 0)
    ) {
      this.pos++;
    }
  }

  private restart(): void {
    this.bitCount = 0;
    const d = this.data;
    while (d[this.pos] === 0xff && d[this.pos + 1] === 0xff) this.pos++; // fill bytes before the marker
    if (d[this.pos] === 0xff && d[this.pos + 1]! >= 0xd0 && d[this.pos + 1]! <= 0xd7) {
      this.pos += 2;
      return;
    }
    throw new JpegDataError(`corrupt JPEG data: expected a restart marker at byte ${this.pos}`);
  }
}

// IJG jidctint.c ("islow") constants, CONST_BITS = 13.
const FIX_0_298631336 = 2446;
const FIX_0_390180644 = 3196;
const FIX_0_541196100 = 4433;
const FIX_0_765366865 = 6270;
const FIX_0_899976223 = 7373;
const FIX_1_175875602 = 9633;
const FIX_1_501321110 = 12299;
const FIX_1_847759065 = 15137;
const FIX_1_961570560 = 16069;
const FIX_2_053119869 = 16819;
const FIX_2_562915447 = 20995;
const FIX_3_072711026 = 25172;
const CONST_BITS = 13;

/** IJG's accurate integer inverse DCT with its post-IDCT range limiting (jdmaster.c). */
class InverseDct {
  private readonly pass1Bits: number;
  private readonly rangeMask: number;
  /** Post-IDCT lookup: level shift, clamp, and IJG's wrap-around for gross overflow. */
  private readonly limit: Uint16Array;
  private readonly work = new Int32Array(64);

  constructor(precision: number) {
    const max = (1 << precision) - 1;
    const center = 1 << (precision - 1);
    this.pass1Bits = precision === 8 ? 2 : 1;
    this.rangeMask = max * 4 + 3;
    // Same layout as prepare_range_limit_table, starting at the post-IDCT entry.
    const limit = new Uint16Array(this.rangeMask + 1);
    for (let x = 0; x <= this.rangeMask; x++) {
      if (x < center) limit[x] = x + center;
      else if (x < 2 * (max + 1)) limit[x] = max;
      else if (x < 4 * (max + 1) - center) limit[x] = 0;
      else limit[x] = x - (4 * (max + 1) - center);
    }
    this.limit = limit;
  }

  transform(input: Int32Array, output: Uint16Array): void {
    const ws = this.work;
    const p1 = this.pass1Bits;
    const shift1 = CONST_BITS - p1;
    const round1 = 1 << (shift1 - 1);
    // Pass 1: columns from the input, scaled up by 2^pass1Bits.
    for (let c = 0; c < 8; c++) {
      if (
        input[8 + c] === 0 &&
        input[16 + c] === 0 &&
        input[24 + c] === 0 &&
        input[32 + c] === 0 &&
        input[40 + c] === 0 &&
        input[48 + c] === 0 &&
        input[56 + c] === 0
      ) {
        const dc = input[c]! << p1;
        for (let r = 0; r < 64; r += 8) ws[r + c] = dc;
        continue;
      }
      const o = butterfly(
        input[c]!,
        input[8 + c]!,
        input[16 + c]!,
        input[24 + c]!,
        input[32 + c]!,
        input[40 + c]!,
        input[48 + c]!,
        input[56 + c]!,
      );
      for (let i = 0; i < 8; i++) ws[i * 8 + c] = descale(o[i]! + round1, shift1);
    }
    // Pass 2: rows, descaled by 2^(CONST_BITS + pass1Bits + 3), then range-limited.
    const limit = this.limit;
    const mask = this.rangeMask;
    const shift2 = CONST_BITS + p1 + 3;
    const round2 = 1 << (shift2 - 1);
    for (let r = 0; r < 64; r += 8) {
      if (
        ws[r + 1] === 0 &&
        ws[r + 2] === 0 &&
        ws[r + 3] === 0 &&
        ws[r + 4] === 0 &&
        ws[r + 5] === 0 &&
        ws[r + 6] === 0 &&
        ws[r + 7] === 0
      ) {
        const v = limit[descale(ws[r]! + (1 << (p1 + 2)), p1 + 3) & mask]!;
        output.fill(v, r, r + 8);
        continue;
      }
      const o = butterfly(
        ws[r]!,
        ws[r + 1]!,
        ws[r + 2]!,
        ws[r + 3]!,
        ws[r + 4]!,
        ws[r + 5]!,
        ws[r + 6]!,
        ws[r + 7]!,
      );
      for (let i = 0; i < 8; i++) output[r + i] = limit[descale(o[i]! + round2, shift2) & mask]!;
    }
  }
}

const butterflyOut = new Float64Array(8);

/**
 * One 8-point islow IDCT before descaling (jidctint.c, even and odd parts). IJG's INT32 is a C long,
 * 64 bits on Linux, so nothing wraps here: inputs are 32-bit, products stay below 2^47 and sums below
 * 2^50, exact in doubles. Only the descaled results are cut to 32 bits (C's (int) casts), in descale().
 */
function butterfly(
  x0: number,
  x1: number,
  x2: number,
  x3: number,
  x4: number,
  x5: number,
  x6: number,
  x7: number,
): Float64Array {
  // Even part.
  let z1 = (x2 + x6) * FIX_0_541196100;
  const t2 = z1 - x6 * FIX_1_847759065;
  const t3 = z1 + x2 * FIX_0_765366865;
  const e0 = (x0 + x4) * (1 << CONST_BITS);
  const e1 = (x0 - x4) * (1 << CONST_BITS);
  const t10 = e0 + t3;
  const t13 = e0 - t3;
  const t11 = e1 + t2;
  const t12 = e1 - t2;
  // Odd part.
  z1 = x7 + x1;
  let z2 = x5 + x3;
  let z3 = x7 + x3;
  let z4 = x5 + x1;
  const z5 = (z3 + z4) * FIX_1_175875602;
  let o0 = x7 * FIX_0_298631336;
  let o1 = x5 * FIX_2_053119869;
  let o2 = x3 * FIX_3_072711026;
  let o3 = x1 * FIX_1_501321110;
  z1 *= -FIX_0_899976223;
  z2 *= -FIX_2_562915447;
  z3 = z3 * -FIX_1_961570560 + z5;
  z4 = z4 * -FIX_0_390180644 + z5;
  o0 += z1 + z3;
  o1 += z2 + z4;
  o2 += z2 + z3;
  o3 += z1 + z4;
  const out = butterflyOut;
  out[0] = t10 + o3;
  out[7] = t10 - o3;
  out[1] = t11 + o2;
  out[6] = t11 - o2;
  out[2] = t12 + o1;
  out[5] = t12 - o1;
  out[3] = t13 + o0;
  out[4] = t13 - o0;
  return out;
}

/** IJG's DESCALE's shift on a 64-bit long, then the (int) cast: arithmetic shift, 32-bit wrap. */
function descale(x: number, n: number): number {
  return Math.floor(x * INVERSE_POWERS[n]!) | 0;
}

/** 2^-n, exact, so a multiplication replaces the division. */
const INVERSE_POWERS = Float64Array.from({ length: 32 }, (_, n) => 2 ** -n);

function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}
