// Who may store by STOW-RS: a configured bearer token or basic user; with none configured, loopback only
// (the zero-config gateway binds its HTTP to loopback, and nothing else should store without credentials).
import { isForwarded } from '../../util/forwarded.ts';
import { findCredential, sameSecret } from '../../util/same-secret.ts';
import type { IncomingMessage } from 'node:http';

export interface StowAuth {
  basic: readonly { username: string; password: string }[];
  bearer: readonly string[];
}

export type AuthResult = { ok: true; user: string } | { ok: false; status: 401 | 403; message: string };

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);
function isLoopbackCaller(req: IncomingMessage): boolean {
  if (isForwarded(req.headers)) return false;
  return LOOPBACK.has(req.socket.remoteAddress ?? '');
}

export function authorize(req: IncomingMessage, auth: StowAuth | undefined): AuthResult {
  const configured = auth !== undefined && auth.basic.length + auth.bearer.length > 0;
  if (!configured) {
    return isLoopbackCaller(req)
      ? { ok: true, user: 'loopback' }
      : { ok: false, status: 403, message: 'STOW-RS without credentials is open to loopback clients only' };
  }
  const header = req.headers.authorization ?? '';
  const bearer = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
  if (bearer !== undefined) {
    // Compare every token, so the time taken does not tell which one matched.
    let index = -1;
    auth.bearer.forEach((t, i) => {
      if (sameSecret(t, bearer) && index < 0) index = i;
    });
    if (index >= 0) return { ok: true, user: `token#${index + 1}` };
  }
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header)?.[1];
  if (basic !== undefined) {
    const decoded = Buffer.from(basic, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      const name = decoded.slice(0, colon);
      const user = findCredential(
        auth.basic,
        name,
        decoded.slice(colon + 1),
        (u) => u.username,
        (u) => u.password,
      );
      if (user !== undefined) return { ok: true, user: name };
    }
  }
  return { ok: false, status: 401, message: 'valid credentials required' };
}
