// This process's identity among the gateways and workers sharing one Redis: host name, pid and a random
// suffix (a restarted process that got the same pid, or two containers with the same host name, still
// differ). Stable for the life of the process. It names the maintenance lease's holder, the association
// slots a process holds and the audit records it wrote.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export const NODE_ID = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
