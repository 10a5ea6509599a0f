import type { IncomingHttpHeaders } from 'node:http';

/** Headers a reverse proxy adds. Their presence means the caller is not who the socket says it is. */
const FORWARDING_HEADERS = [
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-real-ip',
];

/** Whether a request came through a proxy: such a request never counts as a loopback caller. */
export function isForwarded(headers: IncomingHttpHeaders): boolean {
  return FORWARDING_HEADERS.some((h) => headers[h] !== undefined);
}
