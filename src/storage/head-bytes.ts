/** Enough for the attributes before Pixel Data of nearly every image. */
export const HEAD_BYTES = 64 * 1024;

/**
 * The first bytes of what a staged stream was given (at most HEAD_BYTES), copied as they pass, so that
 * ingest parses the header without reading the object back (from disk or from S3).
 */
export class HeadBytes {
  private chunks: Buffer[] = [];
  private length = 0;

  note(chunk: Buffer): void {
    if (this.length >= HEAD_BYTES) return;
    const part = chunk.subarray(0, HEAD_BYTES - this.length);
    this.chunks.push(Buffer.from(part));
    this.length += part.length;
  }

  get bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }
}
