-- Makes S a sharded stream unless it is a plain stream (or any key) or
-- already has a layout with another shard count.
--
-- KEYS[1]  S
-- KEYS[2]  {S}:shards
-- ARGV[1]  shard count
--
-- Returns the count in force; errors SKPLAIN (S exists) or SKCOUNT <n>.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('SKPLAIN ' .. KEYS[1] .. ' is a plain stream')
end
local have = redis.call('HGET', KEYS[2], 'count')
if have then
  if have ~= ARGV[1] then
    return redis.error_reply('SKCOUNT ' .. have)
  end
  return tonumber(have)
end
redis.call('HSET', KEYS[2], 'count', ARGV[1], 'version', 1)
return tonumber(ARGV[1])
