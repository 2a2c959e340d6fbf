// One session of Node's etcd3 client (gRPC through @grpc/grpc-js) against an endpoint: KV with
// range options, historic reads, deletes with prev_kv, txns, a lease with keep-alive and
// time-to-live, watches (live with prev_kv, and replayed from a start revision), a lock, an
// election, and etcd's errors. It prints one JSON line per step; revisions are printed relative
// to the session's first write and keys without the session's prefix, so that a session run
// directly against etcd and one run through keygate print the same lines.
//
//   node session.mjs 127.0.0.1:2379 some/prefix/
//   ETCD_CA=ca.pem ETCD_CERT=client.pem ETCD_KEY=client-key.pem node session.mjs https://127.0.0.1:2379 p/

import { readFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';

const [endpoint, prefix] = process.argv.slice(2);
const { ETCD_CA, ETCD_CERT, ETCD_KEY } = process.env;
const credentials = ETCD_CA && {
  rootCertificate: readFileSync(ETCD_CA),
  certChain: ETCD_CERT && readFileSync(ETCD_CERT),
  privateKey: ETCD_KEY && readFileSync(ETCD_KEY),
};
const client = new Etcd3({
  hosts: endpoint.includes('://') ? endpoint : `http://${endpoint}`,
  credentials,
});
let base = 0;

// Revision 0 (a deleted key's create revision) stays 0.
const rel = (rev) => (rev === undefined || rev === null ? null : Number(rev) && Number(rev) - base);
const key = (k) => (k === undefined || k === null ? null : k.toString().slice(prefix.length));
const kv = (k) =>
  k && {
    key: key(k.key),
    value: k.value.toString(),
    create: rel(k.create_revision),
    mod: rel(k.mod_revision),
    version: Number(k.version),
  };
const say = (step, result) => console.log(JSON.stringify({ step, result }));
const failure = async (promise) => {
  try {
    await promise;
    return 'no error';
  } catch (err) {
    return { type: err.constructor.name, message: err.message };
  }
};
const p = (k) => prefix + k;

async function kvSteps() {
  base = Number((await client.put(p('a')).value('1').exec()).header.revision);
  say('put a', rel(base));
  for (const [k, v] of [['b', '2'], ['c', '3'], ['d', '4']]) {
    say(`put ${k}`, rel((await client.put(p(k)).value(v).exec()).header.revision));
  }
  say('get a', await client.get(p('a')).string());
  say('get missing', await client.get(p('zz')).string());
  const all = await client.getAll().prefix(prefix).exec();
  say('range prefix', { kvs: all.kvs.map(kv), count: Number(all.count), more: all.more });
  const desc = await client.getAll().prefix(prefix).sort('Key', 'Descend').limit(2).exec();
  say('range desc limit 2', { keys: desc.kvs.map((k) => key(k.key)), more: desc.more, count: Number(desc.count) });
  say('count', await client.getAll().prefix(prefix).count());
  say('keys only', (await client.getAll().prefix(prefix).keys()).map(key));
  const ser = await client.get(p('b')).serializable(true).exec();
  say('serializable get', ser.kvs.map(kv));
  const old = await client.getAll().prefix(prefix).revision(String(base)).exec();
  say('range at first revision', old.kvs.map(kv));
  const filtered = await client.getAll().prefix(prefix).minModRevision(String(base + 2)).exec();
  say('min mod revision', filtered.kvs.map((k) => key(k.key)));
  const prev = await client.put(p('a')).value('1b').getPrevious();
  say('put prev_kv', kv(prev));
  say('delete prev_kv', (await client.delete().key(p('d')).getPrevious()).map(kv));
  const yes = await client.if(p('a'), 'Value', '==', '1b').then(client.put(p('a')).value('10'), client.get(p('b'))).else(client.put(p('no')).value('x')).commit();
  say('txn then', { succeeded: yes.succeeded, responses: yes.responses.map((r) => r.response) });
  const no = await client.if(p('a'), 'Version', '>', 99).then(client.put(p('no')).value('x')).else(client.get(p('c'))).commit();
  say('txn else', { succeeded: no.succeeded, got: no.responses[0].response_range.kvs.map(kv) });
}

async function leaseSteps() {
  const lease = client.lease(30, { autoKeepAlive: false });
  await lease.put(p('leased')).value('x');
  const id = await lease.grant();
  const alive = await lease.keepaliveOnce();
  say('lease keep-alive', { ttl: Number(alive.TTL) });
  const ttl = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
  say('lease time-to-live', { granted: Number(ttl.grantedTTL), keys: ttl.keys.map(key) });
  await lease.revoke();
  say('leased key after revoke', await client.get(p('leased')).string());
}

/** Collects `n` events of a watcher as they arrive, then cancels it. */
async function events(watcher, n, act) {
  const seen = [];
  const done = new Promise((resolve) => {
    const add = (type) => (k, previous) => {
      seen.push({ type, kv: kv(k), prev: previous ? previous.value.toString() : null });
      if (seen.length === n) resolve();
    };
    watcher.on('put', add('put'));
    watcher.on('delete', add('delete'));
  });
  await act();
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`watch: ${seen.length} of ${n} events`)), 10000);
  });
  await Promise.race([done, late]).finally(() => clearTimeout(timer));
  await watcher.cancel();
  return seen;
}

async function watchSteps() {
  const live = await client.watch().prefix(p('w/')).withPreviousKV().create();
  say('live watch', await events(live, 3, async () => {
    await client.put(p('w/1')).value('one');
    await client.put(p('w/1')).value('uno');
    await client.delete().key(p('w/1')).exec();
  }));
  const replay = await client.watch().prefix(prefix).startRevision(String(base)).create();
  say('replayed watch', await events(replay, 6, async () => {}));
}

async function coordinationSteps() {
  const lock = client.lock(p('lock'));
  await lock.acquire();
  say('lock held', await client.getAll().prefix(p('lock')).count());
  await lock.release();
  say('lock released', await client.getAll().prefix(p('lock')).count());

  const election = client.election(p('election'));
  const campaign = election.campaign('first');
  await new Promise((resolve, reject) => {
    campaign.on('elected', resolve);
    campaign.on('error', reject);
  });
  say('leader', await election.leader());
  await campaign.proclaim('second');
  say('leader after proclaim', await election.leader());
  await campaign.resign();
  say('leader after resign', (await election.leader()) ?? null);
}

async function errorSteps() {
  say('future revision', await failure(client.get(p('a')).revision('999999999').exec()));
  say('empty key', await failure(client.put('').value('x').exec()));
  say('unknown lease', await failure(client.put(p('x')).value('x').lease('123456789').exec()));
}

try {
  await kvSteps();
  await leaseSteps();
  await watchSteps();
  await coordinationSteps();
  await errorSteps();
} catch (err) {
  say('failed', { type: err.constructor.name, message: err.message, stack: err.stack });
  process.exitCode = 1;
} finally {
  client.close();
}
