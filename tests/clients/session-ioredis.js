// A session of ordinary cache traffic through ioredis with its defaults
// (its ready check sends INFO on connect), over the Unix socket in
// CACHE_SOCK and TCP on CACHE_PORT. Prints "ok" at the end.
const assert = require('node:assert/strict');
const Redis = require('ioredis');

async function session(c, tag) {
  assert.equal(await c.ping(), 'PONG');
  assert.equal(await c.set(`${tag}:a`, '1'), 'OK');
  assert.equal(await c.get(`${tag}:a`), '1');
  assert.equal(await c.get(`${tag}:missing`), null);
  assert.equal(await c.set(`${tag}:a`, '2', 'NX'), null);
  assert.equal(await c.setex(`${tag}:s`, 100, 'v'), 'OK');
  const ttl = await c.ttl(`${tag}:s`);
  assert.ok(ttl >= 99 && ttl <= 100, `ttl ${ttl}`);
  assert.equal(await c.incr(`${tag}:n`), 1);
  assert.equal(await c.incrbyfloat(`${tag}:f`, 2.5), '2.5');
  assert.equal(await c.mset(`${tag}:m1`, 'x', `${tag}:m2`, 'y'), 'OK');
  assert.deepEqual(await c.mget(`${tag}:m1`, `${tag}:m2`, `${tag}:nope`), ['x', 'y', null]);
  assert.equal(await c.append(`${tag}:m1`, 'yz'), 3);
  assert.equal(await c.getdel(`${tag}:m2`), 'y');
  assert.equal(await c.strlen(`${tag}:m1`), 3);
  assert.equal(await c.pexpire(`${tag}:m1`, 50000), 1);
  assert.equal(await c.persist(`${tag}:m1`), 1);
  assert.deepEqual(await c.keys(`${tag}:m*`), [`${tag}:m1`]);
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const s = c.scanStream({ match: `${tag}:*`, count: 2 });
    s.on('data', (keys) => keys.forEach((k) => seen.add(k)));
    s.on('end', resolve);
    s.on('error', reject);
  });
  assert.deepEqual([...seen].sort(), ['a', 'f', 'm1', 'n', 's'].map((k) => `${tag}:${k}`));
  const p = c.pipeline();
  for (let i = 0; i < 100; i++) p.set(`${tag}:p${i}`, `${i}`);
  p.get(`${tag}:p42`);
  const res = await p.exec();
  assert.equal(res[100][1], '42');
  await assert.rejects(c.incr(`${tag}:m1`), /not an integer/);
  assert.equal(await c.del(`${tag}:a`, `${tag}:nope`), 1);
  await c.quit();
}

(async () => {
  await session(new Redis({ path: process.env.CACHE_SOCK }), 'unix');
  await session(new Redis(Number(process.env.CACHE_PORT), '127.0.0.1'), 'tcp');
  console.log('ok');
})().catch((e) => { console.error(e); process.exit(1); });
