-- Fence prelude (ordered mode), put before a settling script: the last
-- key is the shard's owner lease, the last argument the token this owner
-- got with it. A consumer that lost its lease (a zombie: frozen, then
-- replaced) is refused before anything is written. The rest of the
-- script sees its usual KEYS and ARGV.
local fence_key = table.remove(KEYS)
local fence_token = table.remove(ARGV)
if redis.call('GET', fence_key) ~= fence_token then
  return redis.error_reply('SKFENCED this consumer no longer owns the shard (' .. fence_key .. ')')
end
