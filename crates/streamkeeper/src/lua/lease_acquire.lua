-- Takes the owner lease of one shard for one group in ordered mode, with
-- a fencing token that grows with every new owner.
--
-- KEYS[1]  the lease {S:i}:owner:<group>
-- KEYS[2]  the epoch counter {S:i}:epoch:<group>
-- ARGV[1]  member (consumer name)
-- ARGV[2]  lease time, ms
--
-- Returns the new token "<member>:<epoch>", or nil while anyone holds the
-- lease. A lease held under this member's own name is not reused either:
-- it is an earlier process of the same name (crashed or frozen), whose
-- token must stop working, and a prefix test would also match another
-- member whose name starts with "<member>:". Renewal is lease_keep.lua.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
