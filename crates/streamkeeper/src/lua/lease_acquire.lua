-- Takes the owner lease of one shard for one group in ordered mode, with
-- a fencing token that grows with every new owner.
--
-- KEYS[1]  the lease {S:i}:owner:<group>
-- KEYS[2]  the epoch counter {S:i}:epoch:<group>
-- ARGV[1]  member (consumer name)
-- ARGV[2]  lease time, ms
--
-- Returns the token "<member>:<epoch>" (renewed when the member already
-- holds it), or nil when another member holds it.
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
