-- Changes the live generations of a sharded stream's layout, if it still
-- is what the caller read: starts a generation (`shard resize`) or drops
-- retired ones (the janitor).
--
-- KEYS[1]  {S}:shards
-- ARGV[1]  the generations as read (`g:count …`)
-- ARGV[2]  the new generations
-- ARGV[3]  the new current count
--
-- Returns 1; errors SKNOLAYOUT, or SKSTALE <gens> when the layout changed.
local gens = redis.call('HGET', KEYS[1], 'gens')
if not gens then
  local count = redis.call('HGET', KEYS[1], 'count')
  if not count then
    return redis.error_reply('SKNOLAYOUT no layout')
  end
  gens = '0:' .. count
end
if gens ~= ARGV[1] then
  return redis.error_reply('SKSTALE ' .. gens)
end
redis.call('HSET', KEYS[1], 'gens', ARGV[2], 'count', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
