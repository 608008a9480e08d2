-- Stores a pending entry for a delayed retry and acks it, atomically.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the retry set {S}:retry (zset, score = due ms)
-- KEYS[3]  the attempt marks {S}:attempts (the entry's mark is removed)
-- ARGV[1]  consumer group
-- ARGV[2]  entry ID
-- ARGV[3]  due time, in ms
-- ARGV[4]  failed attempts so far, this one included
--
-- The member is a msgpack array {group, origin id, attempts, {fields}, id};
-- the fields lose the retry bookkeeping (sk-origin-id, sk-retry-group,
-- sk-attempt), which the mover sets anew.
-- Returns 1 when stored, 0 when the entry is no longer pending, -1 when it
-- was pending but deleted from the stream (it is acked: nothing to retry).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return 0
end
redis.call('HDEL', KEYS[3], ARGV[1] .. '\0' .. ARGV[2])
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -1
end
local fields = {}
local origin = ARGV[2]
local f = found[1][2]
for i = 1, #f, 2 do
  local k = f[i]
  if k == 'sk-origin-id' then
    origin = f[i + 1]
  elseif k ~= 'sk-retry-group' and k ~= 'sk-attempt' then
    fields[#fields + 1] = k
    fields[#fields + 1] = f[i + 1]
  end
end
local member = cmsgpack.pack({ARGV[1], origin, tonumber(ARGV[4]), fields, ARGV[2]})
redis.call('ZADD', KEYS[2], ARGV[3], member)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
