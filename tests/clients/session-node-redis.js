// A session of ordinary cache traffic through node-redis with its defaults,
// over the Unix socket in CACHE_SOCK and TCP on CACHE_PORT. Prints "ok" at
// the end; any error ends it with a non-zero status.
const assert = require('node:assert/strict');
const { createClient } = require('redis');

async function session(c, tag) {
  c.on('error', (e) => { console.error(e); process.exit(1); });
  await c.connect();
  assert.equal(await c.ping(), 'PONG');
  assert.equal(await c.set(`${tag}:a`, '1'), 'OK');
  assert.equal(await c.get(`${tag}:a`), '1');
  assert.equal(await c.get(`${tag}:missing`), null);
  assert.equal(await c.set(`${tag}:a`, '2', { NX: true }), null);
  assert.equal(await c.setEx(`${tag}:s`, 100, 'v'), 'OK');
  const ttl = await c.ttl(`${tag}:s`);
  assert.ok(ttl >= 99 && ttl <= 100, `ttl ${ttl}`);
  assert.equal(await c.incr(`${tag}:n`), 1);
  assert.equal(await c.incrBy(`${tag}:n`, 9), 10);
  assert.equal(await c.mSet({ [`${tag}:m1`]: 'x', [`${tag}:m2`]: 'y' }), 'OK');
  assert.deepEqual(await c.mGet([`${tag}:m1`, `${tag}:m2`, `${tag}:nope`]), ['x', 'y', null]);
  assert.equal(await c.append(`${tag}:m1`, 'yz'), 3);
  assert.equal(await c.getDel(`${tag}:m2`), 'y');
  assert.equal(await c.exists(`${tag}:m2`), 0);
  assert.equal(await c.expire(`${tag}:m1`, 50), 1);
  assert.equal(await c.persist(`${tag}:m1`), 1);
  assert.equal(await c.type(`${tag}:m1`), 'string');
  assert.deepEqual(await c.keys(`${tag}:m*`), [`${tag}:m1`]);
  const seen = new Set();
  for await (const keys of c.scanIterator({ MATCH: `${tag}:*`, COUNT: 2 })) {
    for (const k of [].concat(keys)) seen.add(k);
  }
  assert.deepEqual([...seen].sort(), ['a', 'm1', 'n', 's'].map((k) => `${tag}:${k}`));
  const multi = c.multi ? null : null;
  void multi;
  const replies = await Promise.all([...Array(100).keys()].map((i) => c.set(`${tag}:p${i}`, `${i}`)));
  assert.equal(replies.length, 100);
  assert.equal(await c.get(`${tag}:p42`), '42');
  assert.ok((await c.info()).includes('redis_version'));
  await assert.rejects(c.incr(`${tag}:m1`), /not an integer/);
  assert.equal(await c.del([`${tag}:a`, `${tag}:nope`]), 1);
  await c.quit();
}

(async () => {
  await session(createClient({ socket: { path: process.env.CACHE_SOCK } }), 'unix');
  await session(createClient({ url: `redis://127.0.0.1:${process.env.CACHE_PORT}` }), 'tcp');
  await session(createClient({ url: `redis://127.0.0.1:${process.env.CACHE_PORT}`, RESP: 3 }), 'resp3');
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
