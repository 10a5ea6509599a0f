// A streaming multipart/related reader (RFC 2046 §5.1): parts are handed out one at a time, their bodies as
// async iterables of chunks, so a part of any size passes through a fixed amount of memory. The caller must
// consume (or drain) one part's body before asking for the next part.

export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MultipartError';
  }
}

export interface MultipartPart {
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: AsyncIterable<Buffer>;
}

const MAX_HEADER_BYTES = 16 * 1024;
const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

/** Boundary parameter of a multipart Content-Type, or undefined. */
export function boundaryOf(contentType: string): string | undefined {
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  return m?.[1] ?? m?.[2];
}

/** The value of one Content-Type parameter (quoted or not), lower-cased; undefined when absent. */
export function parameterOf(contentType: string, name: string): string | undefined {
  const m = new RegExp(`;\\s*${name}=(?:"([^"]*)"|([^\\s;"]*))`, 'i').exec(contentType);
  const v = m?.[1] ?? m?.[2];
  return v?.toLowerCase();
}

export async function* readMultipart(
  source: AsyncIterable<Buffer>,
  boundary: string,
): AsyncGenerator<MultipartPart> {
  const reader = new ChunkReader(source[Symbol.asyncIterator]());
  // Every delimiter, the first one included, is CRLF "--" boundary: prefix one CRLF so the first one matches.
  reader.unshift(CRLF);
  const delimiter = Buffer.from(`\r\n--${boundary}`, 'ascii');

  // Preamble: skip up to the first delimiter.
  for (;;) {
    const at = reader.buffer.indexOf(delimiter);
    if (at >= 0) {
      reader.consume(at + delimiter.length);
      break;
    }
    reader.consume(Math.max(0, reader.buffer.length - delimiter.length));
    if (!(await reader.fill())) throw new MultipartError('no multipart boundary in the body');
  }

  for (;;) {
    // After a delimiter: "--" closes the body; otherwise optional padding, then CRLF and the part headers.
    await reader.need(2, 'body ends after a boundary');
    if (reader.buffer.subarray(0, 2).toString('ascii') === '--') return;
    let eol = reader.buffer.indexOf(CRLF);
    while (eol < 0) {
      if (reader.buffer.length > 256) throw new MultipartError('garbage after a boundary');
      if (!(await reader.fill())) throw new MultipartError('body ends after a boundary');
      eol = reader.buffer.indexOf(CRLF);
    }
    reader.consume(eol + CRLF.length);

    let headerEnd = reader.buffer.indexOf(HEADER_END);
    // A part with no headers starts right away with the blank line.
    const noHeaders = reader.buffer.subarray(0, 2).equals(CRLF);
    while (!noHeaders && headerEnd < 0) {
      if (reader.buffer.length > MAX_HEADER_BYTES) throw new MultipartError('part headers too long');
      if (!(await reader.fill())) throw new MultipartError('body ends inside part headers');
      headerEnd = reader.buffer.indexOf(HEADER_END);
    }
    const headers = noHeaders ? {} : parseHeaders(reader.buffer.toString('latin1', 0, headerEnd));
    reader.consume(noHeaders ? CRLF.length : headerEnd + HEADER_END.length);

    let finished = false;
    const body = (async function* (): AsyncGenerator<Buffer> {
      for (;;) {
        const at = reader.buffer.indexOf(delimiter);
        if (at >= 0) {
          if (at > 0) yield reader.buffer.subarray(0, at);
          reader.consume(at + delimiter.length);
          finished = true;
          return;
        }
        // Keep a tail that might be the start of a delimiter split across chunks.
        const safe = reader.buffer.length - (delimiter.length - 1);
        if (safe > 0) {
          yield reader.buffer.subarray(0, safe);
          reader.consume(safe);
        }
        if (!(await reader.fill())) throw new MultipartError('body ends inside a part');
      }
    })();
    yield { headers, body };
    if (!finished) {
      // The caller stopped early: skip the rest of the part.
      for await (const chunk of body) void chunk;
    }
  }
}

function parseHeaders(block: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new MultipartError('malformed part header');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/** A growable window over an async chunk source. */
class ChunkReader {
  buffer: Buffer = Buffer.alloc(0);
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  unshift(bytes: Buffer): void {
    this.buffer = Buffer.concat([bytes, this.buffer]);
  }

  async fill(): Promise<boolean> {
    const r = await this.it.next();
    if (r.done === true) return false;
    const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    return true;
  }

  async need(n: number, what: string): Promise<void> {
    while (this.buffer.length < n) if (!(await this.fill())) throw new MultipartError(what);
  }

  consume(n: number): void {
    this.buffer = this.buffer.subarray(n);
  }
}
