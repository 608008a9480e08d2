-- Seals a shard of an older layout generation (docs/design.md §6
-- "Resharding"): records its cut (the last ID appended to it) and moves its
-- last ID to the largest there is, so that every later XADD to it, from a
-- producer still routing by the old layout, is refused ("exhausted the last
-- possible ID") and re-routed. A shard never written is made an empty
-- stream first, or such an XADD would create it. Idempotent: a sealed shard
-- answers its recorded cut.
--
-- KEYS[1]  the shard {S:i} (or {S:i~g})
-- KEYS[2]  its seal record {S:i}:sealed
--
-- Returns the cut ID; errors SKTYPE <type> when the shard is not a stream.
local cut = redis.call('GET', KEYS[2])
if cut then
  return cut
end
cut = '0-0'
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then
  redis.call('XADD', KEYS[1], '0-1', 'sk-seal', '1')
  redis.call('XDEL', KEYS[1], '0-1')
elseif t ~= 'stream' then
  return redis.error_reply('SKTYPE ' .. t)
else
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      cut = info[i + 1]
    end
  end
end
redis.call('XSETID', KEYS[1], '18446744073709551615-18446744073709551615')
redis.call('SET', KEYS[2], cut)
return cut
