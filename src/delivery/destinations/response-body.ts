// Reading a peer's HTTP response body with a byte cap: a hostile or broken server cannot make delivery
// buffer without end. Shared by the STOW-RS destination and the OAuth2 token client.

export class ResponseTooLargeError extends Error {
  override name = 'ResponseTooLargeError';
  constructor(readonly limit: number) {
    super(`response larger than ${limit} bytes`);
  }
}

/**
 * The body as text, at most `limit` bytes. Past the limit the body is cancelled, and then either what came
 * so far is returned ('truncate', for a response read only for its diagnostics) or ResponseTooLargeError
 * is thrown ('refuse', for a response whose whole content matters).
 */
export async function readBodyCapped(
  res: Response,
  limit: number,
  overLimit: 'truncate' | 'refuse',
): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => undefined);
      if (overLimit === 'refuse') throw new ResponseTooLargeError(limit);
      break;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
