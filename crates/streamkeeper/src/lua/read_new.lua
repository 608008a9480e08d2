-- Reads new entries for a fenced (ordered-mode) consumer; run behind the
-- fence prelude (lua/fence.lua), so a zombie owner — its lease lost —
-- takes nothing: a plain XREADGROUP would move the group's last-delivered
-- ID and leave the entries pending on the zombie, out of the new owner's
-- reach. Scripts cannot block, so the caller waits with a plain XREAD
-- (which changes nothing) after the returned last ID when nothing is new.
--
-- KEYS[1]  the shard stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  COUNT
--
-- Returns { XREADGROUP reply (nil when nothing is new), ID of the
-- stream's newest entry (nil when empty) }.
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
  'STREAMS', KEYS[1], '>')
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = false
if newest[1] then
  last = newest[1][1]
end
return { got, last }
