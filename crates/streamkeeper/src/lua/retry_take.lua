-- Hands out a group's parked retries that are due, to one consumer: each
-- leaves the retry set and becomes that consumer's pending entry in the
-- same step, so two consumers never take the same one, and a consumer
-- that crashes after taking it leaves it pending for the reclaim.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the group's retry set {S}:retry:<group>
-- KEYS[3]  the attempt marks {S}:attempts
-- KEYS[4]  the group's last errors {S}:retry-why:<group>
-- ARGV[1]  consumer group
-- ARGV[2]  the consumer taking them
-- ARGV[3]  now, in ms
-- ARGV[4]  most entries to take
--
-- ARGV[5]  the reserved consumer that holds parked entries (sk-retry)
--
-- Returns {entries, errors}: the entries taken, as XCLAIM replies them
-- ({id, {field, value, ...}} each, in due order), and for each the error
-- its last attempt failed with (false when none was given); the errors
-- leave the hash with the take. Only an entry still held by sk-retry is
-- taken: one a consumer holds already (a `group reset` delivered it
-- again) is being run; one no longer pending (acked by hand, group
-- destroyed) is done with, and its mark goes. Either way its ID leaves
-- the set. An entry deleted from the stream is dropped by XCLAIM.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
if #due == 0 then
  return {{}, {}}
end
redis.call('ZREM', KEYS[2], unpack(due))
local why = {}
for _, id in ipairs(due) do
  why[id] = redis.call('HGET', KEYS[4], id)
end
redis.call('HDEL', KEYS[4], unpack(due))
local parked = {}
for _, id in ipairs(due) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[5] then
    parked[#parked + 1] = id
  elseif #p == 0 then
    redis.call('HDEL', KEYS[3], ARGV[1] .. '\0' .. id)
  end
end
if #parked == 0 then
  if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[5]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[5])
  end
  return {{}, {}}
end
local taken = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(parked))
local got = {}
for _, e in ipairs(taken) do
  got[e[1]] = true
end
for _, id in ipairs(parked) do
  if not got[id] then
    redis.call('HDEL', KEYS[3], ARGV[1] .. '\0' .. id)
  end
end
-- The reserved consumer goes once it holds nothing (retry_store.lua
-- brings it back), so `group ls` counts only real consumers.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[5]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[5])
end
local errors = {}
for i, e in ipairs(taken) do
  errors[i] = why[e[1]] or false
end
return {taken, errors}
